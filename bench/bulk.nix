# A store path of real files for benchmarks: shared libraries, executables, docs and symlinks copied from the
# host, up to `mb` MiB (files over 8 MiB skipped so there are many files, as in real closures).
{ mb ? "300" }:
derivation {
  name = "cachectl-bench-bulk-${mb}mb";
  system = builtins.currentSystem;
  builder = "/bin/sh";
  PATH = "/usr/bin:/bin";
  LC_ALL = "C";
  args = [ "-ec" ''
    limit=$(( ${mb} * 1048576 ))
    for dir in /usr/lib/x86_64-linux-gnu /usr/bin /usr/share/doc /usr/share /usr/lib; do
      find "$dir" -xdev \( -type f -o -type l \) -size -8M -printf '%s %p\n' 2>/dev/null | sort -k2
    done | awk -v limit="$limit" '!seen[$2]++ { if (total >= limit) exit; total += $1; print substr($2, 2) }' \
      > "$TMPDIR/files"
    mkdir -p "$out"
    tar -C / --no-recursion -cf - -T "$TMPDIR/files" 2>/dev/null |
      tar -C "$out" --no-same-owner --no-same-permissions -xf -
    find "$out" ! -type f ! -type d ! -type l -delete
    chmod -R u+w,go-w "$out"
  '' ];
}
