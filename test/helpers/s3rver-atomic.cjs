// s3rver's CLI, with two fixes.
// 1. s3rver writes an object in place, so a PUT whose client dies midway (a kill -9 of the uploader) leaves a
//    truncated object that readers list and fetch. S3 commits a PUT whole or not at all, and so does this: the
//    body goes to a temporary file (not listed: it lacks the object suffix), renamed over the object once
//    complete, and removed when the request fails.
// 2. s3rver answers 500 to a listing or a GET that meets a write beside it: it lists by reading each directory
//    and then stat-ing every name in it, failing when a name has gone in between (such a temporary file
//    renamed, an object deleted), and it rewrites an object's metadata file in place, so a reader can parse a
//    half-written one. An S3 read never fails because of writes beside it: here the names that vanished are
//    skipped, and the metadata files are replaced whole, as the objects are.
'use strict';

const crypto = require('crypto');
const fs = require('fs');
const path = require('path');
// Before the store is loaded: it takes `walk` from the utils when it loads.
const utils = require('s3rver/lib/utils');

/** What `call` returns, or undefined when what it reads has gone (ENOENT). */
function unlessGone(call) {
  try {
    return call();
  } catch (err) {
    if (err.code === 'ENOENT') return undefined;
    throw err;
  }
}

utils.walk = function* walk(dir, recurseFilter) {
  for (const filename of unlessGone(() => fs.readdirSync(dir)) ?? []) {
    const filePath = path.posix.join(dir, filename);
    const stats = unlessGone(() => fs.statSync(filePath));
    if (stats === undefined) continue;
    if (!stats.isDirectory()) yield filePath;
    else if (!recurseFilter || recurseFilter(filePath)) yield* walk(filePath, recurseFilter);
  }
};

const FilesystemStore = require('s3rver/lib/stores/filesystem');

let temporaries = 0;

/** A temporary file beside `final`, renamed over it once written: never listed, as it lacks the object suffix. */
function partialPath(final) {
  return `${final}.partial-${process.pid}-${temporaries++}`;
}

FilesystemStore.prototype.putObject = async function putObject(object) {
  const objectPath = this.getResourcePath(object.bucket, object.key, 'object');
  await fs.promises.mkdir(path.dirname(objectPath), { recursive: true });
  const partial = partialPath(objectPath);
  const md5 = crypto.createHash('md5');
  let size = 0;
  try {
    await new Promise((resolve, reject) => {
      const file = fs.createWriteStream(partial);
      file.on('error', reject).on('finish', resolve);
      if (Buffer.isBuffer(object.content)) {
        md5.update(object.content);
        size = object.content.length;
        file.end(object.content);
      } else {
        object.content.on('error', reject).on('aborted', () => reject(new Error('request aborted')));
        object.content.on('data', (chunk) => {
          md5.update(chunk);
          size += chunk.length;
        });
        object.content.pipe(file);
      }
    });
    await fs.promises.rename(partial, objectPath);
  } catch (err) {
    await fs.promises.rm(partial, { force: true });
    throw err;
  }
  const digest = md5.digest('hex');
  await this.putMetadata(object.bucket, object.key, object.metadata, digest);
  return { size, md5: digest };
};

const putMetadata = FilesystemStore.prototype.putMetadata;
FilesystemStore.prototype.putMetadata = async function atomicPutMetadata(bucket, key, metadata, md5) {
  const store = Object.create(this);
  const written = [];
  // The store writes its files under the paths this gives; they go to temporary files, renamed once all are.
  store.getResourcePath = (...args) => {
    const final = this.getResourcePath(...args);
    const partial = partialPath(final);
    written.push([partial, final]);
    return partial;
  };
  try {
    await putMetadata.call(store, bucket, key, metadata, md5);
    for (const [partial, final] of written) {
      // A path asked for but not written (the MD5 file, when none is given) stays as it was.
      await fs.promises.rename(partial, final).catch((err) => {
        if (err.code !== 'ENOENT') throw err;
      });
    }
  } catch (err) {
    await Promise.all(written.map(([partial]) => fs.promises.rm(partial, { force: true })));
    throw err;
  }
};

require('s3rver/bin/s3rver.js');
