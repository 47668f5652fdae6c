"""A function that reads and writes its blobs with boto3, exactly as it would against S3.

The one change for the cache is `endpoint_url`: the node's S3 endpoint (`cache-server --s3`).
Credentials and the region come from the usual AWS_* variables.
"""

import os
import sys

import boto3

s3 = boto3.client("s3", endpoint_url=os.environ["CACHELET_S3_ENDPOINT"])  # the one change
BUCKET = os.environ.get("BUCKET", "thumbnails")


def handler(key):
    image = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    thumbnail = image[:64]  # stands in for the real resizing
    s3.put_object(Bucket=BUCKET, Key="thumbs/" + key, Body=thumbnail)
    return len(image), len(thumbnail)


if __name__ == "__main__":
    for key in sys.argv[1:]:
        size, thumb = handler(key)
        print(f"{key}: {size} bytes, thumbnail {thumb} bytes")
