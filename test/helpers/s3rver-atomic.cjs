// s3rver's CLI, with one fix: s3rver writes an object in place, so a PUT whose client dies midway (a
// kill -9 of the uploader) leaves a truncated object that readers list and fetch. S3 commits a PUT whole or
// not at all, and so does this: the body goes to a temporary file (not listed: it lacks the object suffix),
// renamed over the object once complete, and removed when the request fails.
'use strict';

const crypto = require('crypto');
const fs = require('fs');
const path = require('path');
const FilesystemStore = require('s3rver/lib/stores/filesystem');

let temporaries = 0;

FilesystemStore.prototype.putObject = async function putObject(object) {
  const objectPath = this.getResourcePath(object.bucket, object.key, 'object');
  await fs.promises.mkdir(path.dirname(objectPath), { recursive: true });
  const partial = `${objectPath}.partial-${process.pid}-${temporaries++}`;
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

require('s3rver/bin/s3rver.js');
