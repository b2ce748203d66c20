#!/usr/bin/env bash
# The end-to-end suites (push, daemon, GC) again, against Swift's s3api instead of s3rver: a strict server with
# real SigV4 checks, Content-MD5 validation and S3-style multipart ETags. Part of `npm test`; run after a build.
set -euo pipefail
cd "$(dirname "$0")/../.."
trap 'bash test/swift/swift.sh stop' EXIT
bash test/swift/swift.sh start
CACHECTL_TEST_S3=swift node --test --test-concurrency=1 --test-timeout=600000 --test-reporter=spec \
  dist/test/push.test.js dist/test/daemon.test.js dist/test/gc.test.js
