"""Drives a node's S3 endpoint with boto3, as an unmodified function would.

Run by tests/s3_endpoint.rs with ENDPOINT, BUCKET, KEY_ID, SECRET and SEEDED (a key written
straight into the store, whose content is SEEDED_VALUE). Prints `ok STEP` after each step;
any failed check raises, and the process exits non-zero.
"""

import os
import threading

import boto3
import botocore
from botocore import UNSIGNED
from botocore.config import Config

ENDPOINT = os.environ["ENDPOINT"]
BUCKET = os.environ["BUCKET"]


def client(key_id=None, secret=None, unsigned=False):
    config = Config(
        signature_version=UNSIGNED if unsigned else "s3v4",
        retries={"max_attempts": 1},
        s3={"addressing_style": "path"},
    )
    return boto3.client(
        "s3",
        endpoint_url=ENDPOINT,
        aws_access_key_id=key_id or os.environ["KEY_ID"],
        aws_secret_access_key=secret or os.environ["SECRET"],
        region_name="us-east-1",
        config=config,
    )


def error_code(call):
    try:
        call()
    except botocore.exceptions.ClientError as e:
        return e.response["Error"]["Code"]
    raise AssertionError("the call succeeded")


s3 = client()

# Transparency: a blob written straight into the store is read through the endpoint.
seeded = s3.get_object(Bucket=BUCKET, Key=os.environ["SEEDED"])
assert seeded["Body"].read() == os.environ["SEEDED_VALUE"].encode(), "seeded blob"
print("ok read-through")

put = s3.put_object(Bucket=BUCKET, Key="photos/cat.txt", Body=b"meow meow meow")
got = s3.get_object(Bucket=BUCKET, Key="photos/cat.txt")
assert got["Body"].read() == b"meow meow meow"
assert got["ETag"] == put["ETag"], (got["ETag"], put["ETag"])
assert got["ContentLength"] == 14
assert got["LastModified"] is not None
print("ok put-get")

ranged = s3.get_object(Bucket=BUCKET, Key="photos/cat.txt", Range="bytes=5-8")
assert ranged["Body"].read() == b"meow"
assert ranged["ContentRange"] == "bytes 5-8/14", ranged["ContentRange"]
suffix = s3.get_object(Bucket=BUCKET, Key="photos/cat.txt", Range="bytes=-4")
assert suffix["Body"].read() == b"meow"
assert error_code(lambda: s3.get_object(Bucket=BUCKET, Key="photos/cat.txt", Range="bytes=99-")) == "InvalidRange"
print("ok ranged-get")

head = s3.head_object(Bucket=BUCKET, Key="photos/cat.txt")
assert head["ContentLength"] == 14 and head["ETag"] == put["ETag"]
assert error_code(lambda: s3.head_object(Bucket=BUCKET, Key="photos/none.txt")) in ("404", "NoSuchKey")
print("ok head")

# Conditional reads.
assert error_code(lambda: s3.get_object(Bucket=BUCKET, Key="photos/cat.txt", IfNoneMatch=put["ETag"])) == "304"
assert error_code(lambda: s3.get_object(Bucket=BUCKET, Key="photos/cat.txt", IfMatch='"stale"')) == "PreconditionFailed"
assert s3.get_object(Bucket=BUCKET, Key="photos/cat.txt", IfMatch=put["ETag"])["Body"].read() == b"meow meow meow"
print("ok conditional-get")

# Conditional writes: of two racing create-only puts, exactly one wins.
outcomes = []


def create(body):
    try:
        client().put_object(Bucket=BUCKET, Key="locks/leader", Body=body, IfNoneMatch="*")
        outcomes.append(("won", body))
    except botocore.exceptions.ClientError as e:
        outcomes.append((e.response["Error"]["Code"], body))


racers = [threading.Thread(target=create, args=(b,)) for b in (b"first", b"second")]
for r in racers:
    r.start()
for r in racers:
    r.join()
winners = [body for outcome, body in outcomes if outcome == "won"]
assert len(winners) == 1, outcomes
assert [o for o, _ in outcomes if o != "won"] == ["PreconditionFailed"], outcomes
assert s3.get_object(Bucket=BUCKET, Key="locks/leader")["Body"].read() == winners[0]
current = s3.head_object(Bucket=BUCKET, Key="locks/leader")["ETag"]
replaced = s3.put_object(Bucket=BUCKET, Key="locks/leader", Body=b"third", IfMatch=current)
assert error_code(lambda: s3.put_object(Bucket=BUCKET, Key="locks/leader", Body=b"late", IfMatch=current)) == "PreconditionFailed"
assert s3.get_object(Bucket=BUCKET, Key="locks/leader")["ETag"] == replaced["ETag"]
print("ok conditional-put")

# Listings with prefixes, delimiters and pages.
for i in range(7):
    s3.put_object(Bucket=BUCKET, Key=f"list/a/{i}.txt", Body=b"x")
s3.put_object(Bucket=BUCKET, Key="list/b/deep/1.txt", Body=b"x")
s3.put_object(Bucket=BUCKET, Key="list/top.txt", Body=b"x")
keys = []
for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix="list/a/", PaginationConfig={"PageSize": 3}):
    keys += [o["Key"] for o in page.get("Contents", [])]
assert keys == [f"list/a/{i}.txt" for i in range(7)], keys
grouped = s3.list_objects_v2(Bucket=BUCKET, Prefix="list/", Delimiter="/")
assert [o["Key"] for o in grouped.get("Contents", [])] == ["list/top.txt"], grouped
assert [p["Prefix"] for p in grouped["CommonPrefixes"]] == ["list/a/", "list/b/"], grouped
partial = s3.list_objects_v2(Bucket=BUCKET, Prefix="list/a/1")
assert [o["Key"] for o in partial["Contents"]] == ["list/a/1.txt"], partial
everything = s3.list_objects_v2(Bucket=BUCKET)
assert not any(o["Key"].startswith("_cachelet") for o in everything.get("Contents", []))
print("ok list")

copied = s3.copy_object(Bucket=BUCKET, Key="photos/copy.txt", CopySource={"Bucket": BUCKET, "Key": "photos/cat.txt"})
assert s3.get_object(Bucket=BUCKET, Key="photos/copy.txt")["Body"].read() == b"meow meow meow"
assert copied["CopyObjectResult"]["ETag"]
print("ok copy")

# A multipart upload, by hand: parts out of order, a listing of parts, an abort.
mpu = s3.create_multipart_upload(Bucket=BUCKET, Key="photos/parts.bin")
part2 = s3.upload_part(Bucket=BUCKET, Key="photos/parts.bin", UploadId=mpu["UploadId"], PartNumber=2, Body=b"B" * 1000)
part1 = s3.upload_part(Bucket=BUCKET, Key="photos/parts.bin", UploadId=mpu["UploadId"], PartNumber=1, Body=b"A" * (5 << 20))
# An upload's parts complete only the object it was created for.
code = error_code(lambda: s3.upload_part(Bucket=BUCKET, Key="photos/other.bin", UploadId=mpu["UploadId"], PartNumber=3, Body=b"x"))
assert code == "NoSuchUpload", code
code = error_code(lambda: s3.upload_part(Bucket=BUCKET, Key="photos/parts.bin", UploadId="not-an-upload", PartNumber=3, Body=b"x"))
assert code == "NoSuchUpload", code
listed = s3.list_parts(Bucket=BUCKET, Key="photos/parts.bin", UploadId=mpu["UploadId"])
assert [p["PartNumber"] for p in listed["Parts"]] == [1, 2], listed
s3.complete_multipart_upload(
    Bucket=BUCKET,
    Key="photos/parts.bin",
    UploadId=mpu["UploadId"],
    MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part1["ETag"]}, {"PartNumber": 2, "ETag": part2["ETag"]}]},
)
body = s3.get_object(Bucket=BUCKET, Key="photos/parts.bin")["Body"].read()
assert body == b"A" * (5 << 20) + b"B" * 1000
aborted = s3.create_multipart_upload(Bucket=BUCKET, Key="photos/aborted.bin")
s3.upload_part(Bucket=BUCKET, Key="photos/aborted.bin", UploadId=aborted["UploadId"], PartNumber=1, Body=b"x")
s3.abort_multipart_upload(Bucket=BUCKET, Key="photos/aborted.bin", UploadId=aborted["UploadId"])
assert error_code(lambda: s3.list_parts(Bucket=BUCKET, Key="photos/aborted.bin", UploadId=aborted["UploadId"])) == "NoSuchUpload"
assert error_code(lambda: s3.head_object(Bucket=BUCKET, Key="photos/aborted.bin")) in ("404", "NoSuchKey")
print("ok multipart")

s3.delete_object(Bucket=BUCKET, Key="photos/copy.txt")
assert error_code(lambda: s3.get_object(Bucket=BUCKET, Key="photos/copy.txt")) == "NoSuchKey"
deleted = s3.delete_objects(Bucket=BUCKET, Delete={"Objects": [{"Key": f"list/a/{i}.txt"} for i in range(7)]})
assert len(deleted["Deleted"]) == 7, deleted
assert "Contents" not in s3.list_objects_v2(Bucket=BUCKET, Prefix="list/a/")
print("ok delete")

assert error_code(lambda: s3.get_object(Bucket="another-app", Key="photos/cat.txt")) == "NoSuchBucket"
print("ok bucket")

# Credentials: a wrong secret and no signature are refused, and the node keeps serving.
assert error_code(lambda: client(secret="not-the-secret").get_object(Bucket=BUCKET, Key="photos/cat.txt")) == "SignatureDoesNotMatch"
assert error_code(lambda: client(key_id="AKIDUNKNOWN").get_object(Bucket=BUCKET, Key="photos/cat.txt")) == "InvalidAccessKeyId"
assert error_code(lambda: client(unsigned=True).get_object(Bucket=BUCKET, Key="photos/cat.txt")) == "AccessDenied"
assert error_code(lambda: client(unsigned=True).put_object(Bucket=BUCKET, Key="photos/evil.txt", Body=b"x")) == "AccessDenied"
assert s3.get_object(Bucket=BUCKET, Key="photos/cat.txt")["Body"].read() == b"meow meow meow"
print("ok auth")
