#!/usr/bin/env node
// The cachectl command's entry. CommonJS, because only a CommonJS module runs before Node's ESM loader reads its
// first file through libuv's thread pool and so fixes the pool's size. The pool gets a thread per core, up to
// libuv's 4: on 2 cores, 4 threads taking turns with the main thread made a file:// push of a 1000-path chain
// 15% slower (every file write is a few trips through the pool).
// eslint-disable-next-line @typescript-eslint/no-require-imports -- CommonJS on purpose, as said above
import os = require('node:os');

process.env.UV_THREADPOOL_SIZE ??= String(Math.min(4, os.availableParallelism()));
void import('./main.js');
