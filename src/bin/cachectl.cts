#!/usr/bin/env node
// The cachectl command's entry. CommonJS, because only a CommonJS module runs before Node's ESM loader reads its
// first file through libuv's thread pool and so fixes the pool's size. 16 threads: a file:// cache's flushes
// (fdatasync, fsync) each hold a pool thread while the disk writes, and many at once share the disk's cache
// flushes. Measured on 2 cores (bench/push's cases, medians of 3): 1000 tiny paths flushed took 1.45 s against
// 2.23 s with 2 threads, a chain of 1000 2.19 s against 2.90 s; unflushed (?fsync=false), 5-10 % longer.
process.env.UV_THREADPOOL_SIZE ??= '16';
void import('./main.js');
