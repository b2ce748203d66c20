#!/usr/bin/env bash
# The end-to-end suites (push, daemon, GC) again, against Swift's s3api instead of s3rver: a strict server with
# real SigV4 checks, Content-MD5 validation and S3-style multipart ETags. Swift runs on this machine, the suites
# in the sid root with its Nix (test/sid-root.sh), as the tier swift of `npm test` (test/run.sh).
set -euo pipefail
cd "$(dirname "$0")/../.."
trap 'bash test/swift/swift.sh stop' EXIT
bash test/swift/swift.sh start
CACHECTL_TEST_S3=swift bash test/sid-root.sh run bash test/run.sh --suites push daemon gc
