//! Contract tests: one per row of the `~s3@1.0` operations table and per quirk of
//! `reference/hyperbeam-s3.md` §1–§3, run against an in-process devnode on `127.0.0.1:0`.

use std::future::Future;
use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hb402_ans104::{DataItem, SigningKey, Tag};
use hb402_devnode::{
    DATAITEMS_BUCKET, Devnode, DevnodeConfig, DevnodeHandle, RouteKind, authorization_header,
    dataitem_key,
};
use md5::{Digest as _, Md5};
use reqwest::{Client, Method, RequestBuilder, Response, StatusCode};
use tempfile::TempDir;

const KEY_ID: &str = "contract-key";

/// The headers a successful `~s3@1.0` reply may carry: the whitelist, the CORS headers, and
/// what the HTTP server itself adds.
const S3_SUCCESS_HEADERS: &[&str] = &[
    "etag",
    "last-modified",
    "content-type",
    "content-length",
    "accept-ranges",
    "access-control-allow-origin",
    "access-control-allow-headers",
    "access-control-allow-methods",
    "date",
];

struct Node {
    handle: DevnodeHandle,
    client: Client,
    dir: TempDir,
}

fn config(dir: &Path) -> DevnodeConfig {
    let mut config = DevnodeConfig::new(dir);
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.access_key_id = KEY_ID.to_owned();
    config
}

async fn start_with(edit: impl FnOnce(&mut DevnodeConfig)) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    edit(&mut config);
    let handle = Devnode::start(config).await.unwrap();
    Node {
        handle,
        client: Client::builder().no_proxy().build().unwrap(),
        dir,
    }
}

async fn start() -> Node {
    start_with(|_| {}).await
}

impl Node {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.handle.url())
    }

    /// A request with the dummy SigV4 header carrying the right access key id.
    fn s3(&self, method: Method, path: &str) -> RequestBuilder {
        self.client
            .request(method, self.url(path))
            .header("authorization", authorization_header(KEY_ID))
    }

    fn anon(&self, method: Method, path: &str) -> RequestBuilder {
        self.client.request(method, self.url(path))
    }

    async fn create_bucket(&self, bucket: &str) {
        let r = self
            .s3(Method::PUT, &format!("/~s3@1.0/{bucket}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "create {bucket}");
    }

    async fn put(&self, bucket: &str, key: &str, body: &[u8]) -> Response {
        self.s3(Method::PUT, &format!("/~s3@1.0/{bucket}/{key}"))
            .body(body.to_vec())
            .send()
            .await
            .unwrap()
    }

    async fn get(&self, bucket: &str, key: &str) -> Response {
        self.s3(Method::GET, &format!("/~s3@1.0/{bucket}/{key}"))
            .send()
            .await
            .unwrap()
    }

    async fn upload(&self, item: &DataItem) -> Response {
        self.anon(Method::POST, "/~bundler@1.0/item?codec-device=ans104@1.0")
            .header("content-type", "application/octet-stream")
            .body(item.to_bytes())
            .send()
            .await
            .unwrap()
    }
}

fn header<'a>(r: &'a Response, name: &str) -> Option<&'a str> {
    r.headers().get(name).map(|v| v.to_str().unwrap())
}

fn quoted_md5(data: &[u8]) -> String {
    format!("\"{}\"", hex::encode(Md5::digest(data)))
}

/// Asserts the shape of a successful device reply: the three CORS headers, nothing outside
/// the whitelist (in particular no `x-amz-*` and no `location`).
fn assert_s3_success(r: &Response) {
    assert_eq!(header(r, "access-control-allow-origin"), Some("*"));
    assert_eq!(header(r, "access-control-allow-headers"), Some("*"));
    assert_eq!(
        header(r, "access-control-allow-methods"),
        Some("GET, POST, PUT, DELETE, OPTIONS")
    );
    for name in r.headers().keys() {
        assert!(
            S3_SUCCESS_HEADERS.contains(&name.as_str()),
            "header {name} leaked through the whitelist"
        );
    }
}

/// Asserts a device error reply: status, `text/plain`, the body, and the one CORS header.
async fn assert_s3_error(r: Response, status: u16, body: &str) {
    assert_eq!(r.status().as_u16(), status);
    assert_eq!(header(&r, "content-type"), Some("text/plain"));
    assert_eq!(header(&r, "access-control-allow-origin"), Some("*"));
    assert!(header(&r, "access-control-allow-methods").is_none());
    assert_eq!(r.text().await.unwrap(), body);
}

async fn poll_until<F, Fut>(limit: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !condition().await {
        assert!(
            Instant::now() < deadline,
            "condition not met within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends bytes as they are and returns the whole response as text.
async fn raw_request(addr: std::net::SocketAddr, request: &str) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    String::from_utf8_lossy(&response).into_owned()
}

fn signed_item(tags: Vec<Tag>, data: &[u8]) -> DataItem {
    let key = SigningKey::ed25519_from_seed(&[42; 32]);
    DataItem::sign(&key, None, None, tags, data.to_vec()).unwrap()
}

fn text_item(data: &str) -> DataItem {
    signed_item(
        vec![
            Tag::new("Content-Type", "text/plain"),
            Tag::new("Data-Protocol", "ao"),
        ],
        data.as_bytes(),
    )
}

// ---------------------------------------------------------------------------------------------
// The operations table (§1.3)

#[tokio::test]
async fn list_buckets_is_501_without_auth() {
    let node = start().await;
    let r = node.anon(Method::GET, "/~s3@1.0/").send().await.unwrap();
    assert_s3_error(r, 501, "ListBucketsCommand not implemented yet").await;
    assert_eq!(node.handle.counters().requests(RouteKind::ListBuckets), 1);
}

#[tokio::test]
async fn create_bucket_is_200_empty_and_refuses_a_second_create() {
    let node = start().await;
    let r = node
        .s3(Method::PUT, "/~s3@1.0/photos")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_s3_success(&r);
    assert!(header(&r, "location").is_none());
    assert!(r.bytes().await.unwrap().is_empty());

    let again = node
        .s3(Method::PUT, "/~s3@1.0/photos")
        .send()
        .await
        .unwrap();
    assert_s3_error(
        again,
        500,
        "Error: BucketAlreadyOwnedByYou: Your previous request to create the named bucket succeeded and you already own it.",
    )
    .await;
    let bad = node
        .s3(Method::PUT, "/~s3@1.0/Not_Valid")
        .send()
        .await
        .unwrap();
    assert_s3_error(bad, 500, "Error: unhandled error (InvalidBucketName)").await;
}

#[tokio::test]
async fn head_bucket_is_200_or_404_for_any_error() {
    let node = start().await;
    node.create_bucket("present").await;
    let r = node
        .s3(Method::HEAD, "/~s3@1.0/present")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_s3_success(&r);
    assert!(header(&r, "x-amz-bucket-region").is_none());

    let missing = node
        .s3(Method::HEAD, "/~s3@1.0/absent")
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert_eq!(header(&missing, "content-type"), Some("text/plain"));
    let invalid = node
        .s3(Method::HEAD, "/~s3@1.0/No_Such")
        .send()
        .await
        .unwrap();
    assert_eq!(invalid.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn list_objects_answers_v1_xml() {
    let node = start().await;
    node.create_bucket("list").await;
    for key in ["a.txt", "dir/x", "dir/y", "dir/sub/1", "z"] {
        assert_eq!(
            node.put("list", key, b"data").await.status(),
            StatusCode::OK
        );
    }
    let r = node
        .s3(Method::GET, "/~s3@1.0/list?delimiter=%2F&list-type=2")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_s3_success(&r);
    assert_eq!(header(&r, "content-type"), Some("application/xml"));
    assert_eq!(header(&r, "accept-ranges"), Some("bytes"));
    let xml = r.text().await.unwrap();
    assert!(xml.starts_with(
        r#"<?xml version="1.0" encoding="UTF-8"?><ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>list</Name><Prefix></Prefix><Marker></Marker><MaxKeys>1000</MaxKeys><IsTruncated>false</IsTruncated><Delimiter>/</Delimiter><Contents><Key>a.txt</Key><LastModified>"#
    ), "{xml}");
    // list-type=2 is ignored: a v1 answer, no KeyCount / continuation token.
    assert!(!xml.contains("KeyCount") && !xml.contains("ContinuationToken"));
    assert!(xml.contains(&format!(
        "<ETag>{}</ETag><Size>4</Size><StorageClass>STANDARD</StorageClass>",
        quoted_md5(b"data")
    )));
    assert!(xml.contains("<Key>z</Key>"));
    assert!(
        xml.ends_with("<CommonPrefixes><Prefix>dir/</Prefix></CommonPrefixes></ListBucketResult>")
    );

    let page = node
        .s3(Method::GET, "/~s3@1.0/list?prefix=dir/&max-keys=1")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("<Prefix>dir/</Prefix><Marker></Marker><MaxKeys>1</MaxKeys><IsTruncated>true</IsTruncated><NextMarker>dir/sub/1</NextMarker>"), "{page}");
    assert!(page.contains("<Key>dir/sub/1</Key>") && !page.contains("<Key>dir/x</Key>"));
    let next = node
        .s3(Method::GET, "/~s3@1.0/list?prefix=dir/&marker=dir/sub/1")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(next.contains("<Key>dir/x</Key>") && next.contains("<Key>dir/y</Key>"));
    assert!(!next.contains("<Key>dir/sub/1</Key>"));
}

#[tokio::test]
async fn list_objects_errors_are_500() {
    let node = start().await;
    let r = node
        .s3(Method::GET, "/~s3@1.0/absent")
        .send()
        .await
        .unwrap();
    assert_s3_error(
        r,
        500,
        "Error: NoSuchBucket: The specified bucket does not exist",
    )
    .await;
    node.create_bucket("present").await;
    let bad_escape = node
        .s3(Method::GET, "/~s3@1.0/present?prefix=%zz")
        .send()
        .await
        .unwrap();
    assert_s3_error(bad_escape, 500, "S3 request failed").await;
    let negative = node
        .s3(Method::GET, "/~s3@1.0/present?max-keys=-1")
        .send()
        .await
        .unwrap();
    assert_s3_error(negative, 500, "Error: unhandled error (InvalidArgument)").await;
}

#[tokio::test]
async fn delete_objects_extracts_keys_and_answers_delete_result() {
    let node = start().await;
    node.create_bucket("bulk").await;
    for key in ["one", "dir/two", "keep"] {
        node.put("bulk", key, b"x").await;
    }
    let body = "<Delete><Object><Key>one</Key></Object><Object><Key>dir/two</Key></Object>\
                <Object><Key>never-existed</Key></Object></Delete>";
    let r = node
        .s3(Method::POST, "/~s3@1.0/bulk?delete")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_s3_success(&r);
    assert_eq!(header(&r, "content-type"), Some("application/xml"));
    assert_eq!(
        r.text().await.unwrap(),
        r#"<?xml version="1.0" encoding="UTF-8"?><DeleteResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Deleted><Key>one</Key><DeleteMarker>false</DeleteMarker></Deleted><Deleted><Key>dir/two</Key><DeleteMarker>false</DeleteMarker></Deleted><Deleted><Key>never-existed</Key><DeleteMarker>false</DeleteMarker></Deleted></DeleteResult>"#
    );
    assert_eq!(
        node.get("bulk", "one").await.status(),
        StatusCode::INTERNAL_SERVER_ERROR
    );
    assert_eq!(
        node.get("bulk", "dir/two").await.status(),
        StatusCode::INTERNAL_SERVER_ERROR
    );
    assert_eq!(node.get("bulk", "keep").await.status(), StatusCode::OK);

    let no_keys = node
        .s3(Method::POST, "/~s3@1.0/bulk")
        .body("<Delete/>")
        .send()
        .await
        .unwrap();
    assert_s3_error(no_keys, 500, "Error: unhandled error (MalformedXML)").await;
    let missing = node
        .s3(Method::POST, "/~s3@1.0/absent?delete")
        .body("<Key>a</Key>")
        .send()
        .await
        .unwrap();
    assert_s3_error(missing, 500, "Error: unhandled error (NoSuchBucket)").await;
}

#[tokio::test]
async fn put_object_is_200_empty_with_etag_and_ignores_content_type() {
    let node = start().await;
    node.create_bucket("puts").await;
    let r = node
        .s3(Method::PUT, "/~s3@1.0/puts/page.html")
        .header("content-type", "text/html")
        .header("x-amz-meta-author", "someone")
        .body("<p>hi</p>")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_s3_success(&r);
    assert_eq!(header(&r, "etag"), Some(quoted_md5(b"<p>hi</p>").as_str()));
    assert_eq!(header(&r, "accept-ranges"), Some("bytes"));
    assert!(r.bytes().await.unwrap().is_empty());

    let got = node.get("puts", "page.html").await;
    assert_eq!(header(&got, "content-type"), Some("binary/octet-stream"));
    assert!(header(&got, "x-amz-meta-author").is_none());
    assert_eq!(node.handle.counters().objects_stored(), 1);

    let missing_bucket = node.put("absent", "k", b"x").await;
    assert_s3_error(missing_bucket, 500, "Error unhandled error (NoSuchBucket)").await;
}

#[tokio::test]
async fn put_object_expiry_days_out_of_range_is_500() {
    let node = start().await;
    node.create_bucket("exp").await;
    let put = |days: &'static str| {
        node.s3(Method::PUT, "/~s3@1.0/exp/obj")
            .header("x-amz-meta-expiry-days", days)
            .body("payload")
            .send()
    };
    assert_s3_error(put("366").await.unwrap(), 500, "Error unhandled error").await;
    assert_eq!(
        node.get("exp", "obj").await.status(),
        StatusCode::INTERNAL_SERVER_ERROR
    );
    assert_s3_error(put("2147483648").await.unwrap(), 500, "S3 request failed").await;
    assert_eq!(node.handle.counters().objects_stored(), 0);
    // 0, negative and non-integer values mean "no expiry" (the device reads them as 0).
    for days in ["0", "-3", "abc", "1", "365"] {
        assert_eq!(
            put(days).await.unwrap().status(),
            StatusCode::OK,
            "expiry-days {days}"
        );
    }
}

#[tokio::test]
async fn get_object_has_the_device_headers() {
    let node = start().await;
    node.create_bucket("gets").await;
    node.put("gets", "file.bin", b"0123456789").await;
    let r = node.get("gets", "file.bin").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_s3_success(&r);
    assert_eq!(header(&r, "content-type"), Some("binary/octet-stream"));
    assert_eq!(header(&r, "content-length"), Some("10"));
    assert_eq!(header(&r, "etag"), Some(quoted_md5(b"0123456789").as_str()));
    assert_eq!(header(&r, "accept-ranges"), Some("bytes"));
    let last_modified = header(&r, "last-modified").unwrap();
    httpdate::parse_http_date(last_modified).unwrap();
    assert_eq!(r.bytes().await.unwrap(), "0123456789");
}

#[tokio::test]
async fn ranged_get_is_200_with_only_the_requested_bytes() {
    let node = start().await;
    node.create_bucket("ranges").await;
    node.put("ranges", "digits", b"0123456789").await;
    let ranged = |range: &'static str| {
        node.s3(Method::GET, "/~s3@1.0/ranges/digits")
            .header("range", range)
            .send()
    };
    let r = ranged("bytes=2-5").await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_s3_success(&r);
    assert!(header(&r, "content-range").is_none());
    assert_eq!(header(&r, "content-length"), Some("4"));
    assert_eq!(header(&r, "etag"), Some(quoted_md5(b"0123456789").as_str()));
    assert_eq!(r.bytes().await.unwrap(), "2345");

    let suffix = ranged("bytes=-3").await.unwrap();
    assert_eq!(suffix.status(), StatusCode::OK);
    assert_eq!(suffix.bytes().await.unwrap(), "789");
    let ignored = ranged("bytes=0-1,4-5").await.unwrap();
    assert_eq!(ignored.bytes().await.unwrap(), "0123456789");
    let unsatisfiable = ranged("bytes=10-").await.unwrap();
    assert_s3_error(unsatisfiable, 500, "Error: unhandled error (InvalidRange)").await;
}

#[tokio::test]
async fn get_of_a_missing_key_is_500() {
    let node = start().await;
    node.create_bucket("gets").await;
    let r = node.get("gets", "nothing-here").await;
    assert_s3_error(
        r,
        500,
        "Error: NoSuchKey: The specified key does not exist.",
    )
    .await;
    let no_bucket = node.get("absent", "k").await;
    assert_s3_error(no_bucket, 500, "Error: unhandled error (NoSuchBucket)").await;
}

#[tokio::test]
async fn head_object_has_the_get_headers_and_no_body() {
    let node = start().await;
    node.create_bucket("heads").await;
    node.put("heads", "a/b.txt", b"twelve bytes").await;
    let r = node
        .s3(Method::HEAD, "/~s3@1.0/heads/a/b.txt")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_s3_success(&r);
    assert_eq!(header(&r, "content-length"), Some("12"));
    assert_eq!(header(&r, "content-type"), Some("binary/octet-stream"));
    assert_eq!(
        header(&r, "etag"),
        Some(quoted_md5(b"twelve bytes").as_str())
    );
    assert_eq!(header(&r, "accept-ranges"), Some("bytes"));
    assert!(header(&r, "last-modified").is_some());
    assert!(r.bytes().await.unwrap().is_empty());

    let missing = node
        .s3(Method::HEAD, "/~s3@1.0/heads/none")
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(header(&missing, "content-type"), Some("text/plain"));
}

#[tokio::test]
async fn delete_object_is_204_without_amz_headers() {
    let node = start().await;
    node.create_bucket("dels").await;
    node.put("dels", "k", b"v").await;
    let r = node
        .s3(Method::DELETE, "/~s3@1.0/dels/k")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_s3_success(&r);
    assert!(header(&r, "x-amz-delete-marker").is_none());
    assert!(header(&r, "x-amz-version-id").is_none());
    assert_eq!(
        node.get("dels", "k").await.status(),
        StatusCode::INTERNAL_SERVER_ERROR
    );
    // Deleting what is not there still succeeds, as in S3.
    let again = node
        .s3(Method::DELETE, "/~s3@1.0/dels/k")
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::NO_CONTENT);
    let no_bucket = node
        .s3(Method::DELETE, "/~s3@1.0/absent/k")
        .send()
        .await
        .unwrap();
    assert_s3_error(no_bucket, 500, "Error: unhandled error (NoSuchBucket)").await;
}

#[tokio::test]
async fn presign_returns_a_url_that_serves_the_object() {
    let node = start().await;
    node.create_bucket("shared").await;
    node.put("shared", "dir/report.pdf", b"%PDF-1.7 content")
        .await;
    let r = node
        .s3(Method::POST, "/~s3@1.0/get-presigned")
        .body(r#"{"bucket":"shared","key":"dir/report.pdf","duration":600}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_s3_success(&r);
    assert_eq!(header(&r, "content-type"), Some("text/plain"));
    let url = r.text().await.unwrap();
    assert!(
        url.starts_with(&node.url("/s3/shared/dir/report.pdf?")),
        "{url}"
    );
    for param in [
        "X-Amz-Algorithm=AWS4-HMAC-SHA256",
        "X-Amz-Expires=600",
        "X-Amz-Signature=",
    ] {
        assert!(url.contains(param), "{url} lacks {param}");
    }
    assert!(url.contains(&format!("X-Amz-Credential={KEY_ID}%2F")));

    // Using the URL needs no Authorization, like S3.
    let got = node.client.get(&url).send().await.unwrap();
    assert_eq!(got.status(), StatusCode::OK);
    assert_eq!(header(&got, "content-type"), Some("binary/octet-stream"));
    assert_eq!(got.bytes().await.unwrap(), "%PDF-1.7 content");
    let part = node
        .client
        .get(&url)
        .header("range", "bytes=0-3")
        .send()
        .await
        .unwrap();
    assert_eq!(part.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(header(&part, "content-range"), Some("bytes 0-3/16"));
    assert_eq!(part.bytes().await.unwrap(), "%PDF");

    let tampered = url.replace("report.pdf", "other.pdf");
    let refused = node.client.get(&tampered).send().await.unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert!(
        refused
            .text()
            .await
            .unwrap()
            .contains("<Code>SignatureDoesNotMatch</Code>")
    );
    assert_eq!(node.handle.counters().requests(RouteKind::PresignedGet), 3);

    // The default duration is 3600 s.
    let default = node
        .s3(Method::POST, "/~s3@1.0/get-presigned")
        .body(r#"{"bucket":"shared","key":"dir/report.pdf"}"#)
        .send()
        .await
        .unwrap();
    assert!(default.text().await.unwrap().contains("X-Amz-Expires=3600"));
}

#[tokio::test]
async fn presign_errors() {
    let node = start().await;
    let presign = |body: &'static str| {
        node.s3(Method::POST, "/~s3@1.0/get-presigned")
            .body(body)
            .send()
    };
    assert_s3_error(presign("{not json").await.unwrap(), 400, "Invalid JSON").await;
    assert_s3_error(presign("[1,2]").await.unwrap(), 400, "Invalid JSON format").await;
    for duration in ["0", "604801"] {
        let body: &'static str = if duration == "0" {
            r#"{"bucket":"b","key":"k","duration":0}"#
        } else {
            r#"{"bucket":"b","key":"k","duration":604801}"#
        };
        let r = presign(body).await.unwrap();
        assert_eq!(
            r.status(),
            StatusCode::INTERNAL_SERVER_ERROR,
            "duration {duration}"
        );
    }
    let ok = presign(r#"{"bucket":"b","key":"k","duration":604800}"#)
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
}

#[tokio::test]
async fn presigned_urls_expire() {
    let node = start().await;
    node.create_bucket("shared").await;
    node.put("shared", "k", b"v").await;
    let url = node
        .s3(Method::POST, "/~s3@1.0/get-presigned")
        .body(r#"{"bucket":"shared","key":"k","duration":1}"#)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let client = node.client.clone();
    poll_until(Duration::from_secs(10), || {
        let (client, url) = (client.clone(), url.clone());
        async move { client.get(&url).send().await.unwrap().status() == StatusCode::FORBIDDEN }
    })
    .await;
    let body = node
        .client
        .get(&url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        body.contains("<Message>Request has expired</Message>"),
        "{body}"
    );
}

#[tokio::test]
async fn cache_route_is_unauthenticated_and_never_invalidated() {
    let node = start().await;
    node.create_bucket("cached").await;
    node.put("cached", "a/b", b"first").await;
    let r = node
        .anon(Method::GET, "/~s3@1.0/cache/cached/a//b")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_s3_success(&r);
    assert_eq!(header(&r, "content-type"), Some("binary/octet-stream"));
    assert_eq!(header(&r, "etag"), Some(quoted_md5(b"first").as_str()));
    assert!(header(&r, "last-modified").is_none());
    assert_eq!(r.bytes().await.unwrap(), "first");
    // Range is not supported on this route.
    let ranged = node
        .anon(Method::GET, "/~s3@1.0/cache/cached/a/b")
        .header("range", "bytes=0-1")
        .send()
        .await
        .unwrap();
    assert_eq!(ranged.bytes().await.unwrap(), "first");

    // The LRU is never invalidated: the deleted object is still served from it.
    node.s3(Method::DELETE, "/~s3@1.0/cached/a/b")
        .send()
        .await
        .unwrap();
    let stale = node
        .anon(Method::GET, "/~s3@1.0/cache/cached/a/b")
        .send()
        .await
        .unwrap();
    assert_eq!(stale.bytes().await.unwrap(), "first");

    let missing = node
        .anon(Method::GET, "/~s3@1.0/cache/cached/never")
        .send()
        .await
        .unwrap();
    assert_s3_error(missing, 404, "Error: failed to retrieve cached object").await;
    assert_eq!(node.handle.counters().requests(RouteKind::Cache), 4);
}

#[tokio::test]
async fn other_methods_are_405() {
    let node = start().await;
    for method in ["PATCH", "PURGE"] {
        let r = node
            .s3(
                Method::from_bytes(method.as_bytes()).unwrap(),
                "/~s3@1.0/b/k",
            )
            .send()
            .await
            .unwrap();
        assert_s3_error(r, 405, &format!("Method {method} not supported")).await;
    }
}

#[tokio::test]
async fn options_is_answered_as_a_cors_preflight() {
    let node = start().await;
    for path in ["/~s3@1.0/bucket/key", "/~bundler@1.0/item", "/anything"] {
        let r = node
            .anon(Method::OPTIONS, path)
            .header("origin", "https://example.com")
            .header("access-control-request-method", "PUT")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NO_CONTENT, "{path}");
        assert_eq!(header(&r, "access-control-allow-origin"), Some("*"));
        assert_eq!(header(&r, "access-control-allow-headers"), Some("*"));
        assert_eq!(
            header(&r, "access-control-allow-methods"),
            Some("GET, POST, PUT, DELETE, OPTIONS, PATCH")
        );
    }
    assert_eq!(node.handle.counters().requests(RouteKind::Preflight), 3);
}

#[tokio::test]
async fn invalid_paths_are_400() {
    let node = start().await;
    let cases: &[(Method, &str, u16, &str)] = &[
        (Method::GET, "/~s3@1.0//key", 400, "Invalid S3 path"),
        (Method::GET, "/~s3@1.0/cache/", 400, "Invalid S3 path"),
        (Method::PUT, "/~s3@1.0/", 400, "Invalid PUT path"),
        (Method::HEAD, "/~s3@1.0/", 400, ""),
        (
            Method::DELETE,
            "/~s3@1.0/bucket",
            400,
            "Invalid DELETE path - can only DELETE objects",
        ),
        (
            Method::POST,
            "/~s3@1.0/bucket/key",
            400,
            "Invalid POST path",
        ),
        // `get_presigned` has no clause in the device's GET branch: an exception.
        (
            Method::GET,
            "/~s3@1.0/get-presigned",
            500,
            "S3 request failed",
        ),
    ];
    for (method, path, status, body) in cases {
        let r = node.anon(method.clone(), path).send().await.unwrap();
        assert_s3_error(r, *status, body).await;
    }
    assert_eq!(
        node.handle.counters().requests(RouteKind::S3Other),
        cases.len() as u64
    );
}

#[tokio::test]
async fn a_wrong_access_key_id_is_500_s3_request_failed() {
    let node = start().await;
    node.create_bucket("guarded").await;
    node.put("guarded", "k", b"v").await;
    let cases: &[(Method, &str)] = &[
        (Method::PUT, "/~s3@1.0/another"),
        (Method::HEAD, "/~s3@1.0/guarded"),
        (Method::GET, "/~s3@1.0/guarded"),
        (Method::POST, "/~s3@1.0/guarded?delete"),
        (Method::PUT, "/~s3@1.0/guarded/k"),
        (Method::GET, "/~s3@1.0/guarded/k"),
        (Method::HEAD, "/~s3@1.0/guarded/k"),
        (Method::DELETE, "/~s3@1.0/guarded/k"),
        (Method::POST, "/~s3@1.0/get-presigned"),
    ];
    let wrong = authorization_header("someone-else");
    for (method, path) in cases {
        for auth in [Some(wrong.as_str()), None, Some("Bearer token")] {
            let mut request = node
                .anon(method.clone(), path)
                .body(r#"{"bucket":"guarded","key":"k"}"#);
            if let Some(auth) = auth {
                request = request.header("authorization", auth);
            }
            let r = request.send().await.unwrap();
            assert_eq!(
                r.status(),
                StatusCode::INTERNAL_SERVER_ERROR,
                "{method} {path} {auth:?}"
            );
            assert_eq!(header(&r, "content-type"), Some("text/plain"));
            if *method != Method::HEAD {
                assert_eq!(r.text().await.unwrap(), "S3 request failed");
            }
        }
    }
    // Nothing was changed.
    assert_eq!(node.get("guarded", "k").await.bytes().await.unwrap(), "v");
    assert_eq!(node.handle.counters().objects_stored(), 1);
}

#[tokio::test]
async fn keys_drop_empty_segments_and_stay_raw() {
    let node = start().await;
    node.create_bucket("keys").await;
    node.put("keys", "a//b/", b"one").await;
    assert_eq!(node.get("keys", "a/b").await.bytes().await.unwrap(), "one");
    // The path is not percent-decoded: `%20` is part of the key.
    node.put("keys", "with%20space", b"two").await;
    let xml = node
        .s3(Method::GET, "/~s3@1.0/keys")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        xml.contains("<Key>a/b</Key>") && xml.contains("<Key>with%20space</Key>"),
        "{xml}"
    );
    // Keys cannot reach outside the data directory.
    // (HTTP clients normalise `..` away, so this request is written by hand.)
    assert_eq!(
        node.put("keys", "..%2F..%2Fescape", b"three")
            .await
            .status(),
        StatusCode::OK
    );
    let response = raw_request(
        node.handle.addr(),
        &format!(
            "PUT /~s3@1.0/keys/../../escape HTTP/1.1\r\nhost: devnode\r\nauthorization: {}\r\n\
             content-length: 4\r\nconnection: close\r\n\r\nfour",
            authorization_header(KEY_ID)
        ),
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
    let xml = node
        .s3(Method::GET, "/~s3@1.0/keys")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(xml.contains("<Key>../../escape</Key>"), "{xml}");
    assert!(!node.dir.path().parent().unwrap().join("escape").exists());
    let top: Vec<_> = std::fs::read_dir(node.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(
        top.iter()
            .all(|name| name == "buckets" || name == "node-key"),
        "{top:?}"
    );
}

#[tokio::test]
async fn request_bodies_are_bounded() {
    let node = start_with(|c| c.max_body_bytes = 16).await;
    node.create_bucket("small").await;
    let r = node.put("small", "big", &[b'x'; 17]).await;
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        node.put("small", "fits", &[b'x'; 16]).await.status(),
        StatusCode::OK
    );
    assert_eq!(node.handle.counters().objects_stored(), 1);
}

// ---------------------------------------------------------------------------------------------
// Expiry (§1.6) and persistence

#[tokio::test]
async fn objects_expire_after_their_days() {
    let node = start_with(|c| c.day_seconds = 1).await;
    node.create_bucket("temp").await;
    let r = node
        .s3(Method::PUT, "/~s3@1.0/temp/short")
        .header("x-amz-meta-expiry-days", "1")
        .body("soon gone")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    node.put("temp", "forever", b"stays").await;
    // An expiring DataItem, written through the S3 API like Load's tools do.
    let item = text_item("expiring item");
    let r = node
        .s3(
            Method::PUT,
            &format!("/~s3@1.0/{DATAITEMS_BUCKET}/{}", dataitem_key(&item.id())),
        )
        .header("x-amz-meta-expiry-days", "2")
        .body(item.to_bytes())
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::INTERNAL_SERVER_ERROR,
        "the bucket does not exist yet"
    );
    node.create_bucket(DATAITEMS_BUCKET).await;
    let r = node
        .s3(
            Method::PUT,
            &format!("/~s3@1.0/{DATAITEMS_BUCKET}/{}", dataitem_key(&item.id())),
        )
        .header("x-amz-meta-expiry-days", "2")
        .body(item.to_bytes())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(node.get("temp", "short").await.status(), StatusCode::OK);
    assert_eq!(
        node.anon(Method::GET, &format!("/{}", item.id()))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );

    poll_until(Duration::from_secs(10), || async {
        node.get("temp", "short").await.status() == StatusCode::INTERNAL_SERVER_ERROR
    })
    .await;
    assert_s3_error(
        node.get("temp", "short").await,
        500,
        "Error: NoSuchKey: The specified key does not exist.",
    )
    .await;
    let head = node
        .s3(Method::HEAD, "/~s3@1.0/temp/short")
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let xml = node
        .s3(Method::GET, "/~s3@1.0/temp")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!xml.contains("<Key>short</Key>") && xml.contains("<Key>forever</Key>"));

    poll_until(Duration::from_secs(10), || async {
        node.anon(Method::GET, &format!("/{}", item.id()))
            .send()
            .await
            .unwrap()
            .status()
            == StatusCode::NOT_FOUND
    })
    .await;
    assert_eq!(
        node.get("temp", "forever").await.bytes().await.unwrap(),
        "stays"
    );
}

#[tokio::test]
async fn a_restart_keeps_buckets_objects_and_the_node_address() {
    let dir = tempfile::tempdir().unwrap();
    let client = Client::builder().no_proxy().build().unwrap();
    let auth = authorization_header(KEY_ID);
    let item = text_item("persisted item");

    let first = Devnode::start(config(dir.path())).await.unwrap();
    let base = first.url();
    client
        .put(format!("{base}/~s3@1.0/keep"))
        .header("authorization", &auth)
        .send()
        .await
        .unwrap();
    let put = client
        .put(format!("{base}/~s3@1.0/keep/some/key"))
        .header("authorization", &auth)
        .body("kept bytes")
        .send()
        .await
        .unwrap();
    let etag = header(&put, "etag").unwrap().to_owned();
    let upload = client
        .post(format!("{base}/~bundler@1.0/item?codec-device=ans104@1.0"))
        .body(item.to_bytes())
        .send()
        .await
        .unwrap();
    assert_eq!(upload.status(), StatusCode::OK);
    let address = client
        .get(format!("{base}/~meta@1.0/info/address"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    first.shutdown().await.unwrap();
    assert!(
        client
            .get(format!("{base}/~meta@1.0/info/address"))
            .send()
            .await
            .is_err()
    );

    let second = Devnode::start(config(dir.path())).await.unwrap();
    let base = second.url();
    let got = client
        .get(format!("{base}/~s3@1.0/keep/some/key"))
        .header("authorization", &auth)
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), StatusCode::OK);
    assert_eq!(header(&got, "etag"), Some(etag.as_str()));
    assert_eq!(got.bytes().await.unwrap(), "kept bytes");
    let head = client
        .head(format!("{base}/~s3@1.0/keep"))
        .header("authorization", &auth)
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    let gateway = client
        .get(format!("{base}/{}", item.id()))
        .send()
        .await
        .unwrap();
    assert_eq!(gateway.bytes().await.unwrap(), "persisted item");
    let address_again = client
        .get(format!("{base}/~meta@1.0/info/address"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(address, address_again);
    second.shutdown().await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// Bundler upload (§3.1), hybrid gateway (§2.2), meta

#[tokio::test]
async fn bundler_stores_a_valid_item_and_answers_its_id() {
    let node = start().await;
    let item = text_item("Hello Load S3");
    let id = item.id().to_string();
    let r = node.upload(&item).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "id"), Some(id.as_str()));
    let timestamp: u64 = header(&r, "timestamp").unwrap().parse().unwrap();
    assert!(timestamp > 1_700_000_000_000, "timestamp in milliseconds");
    assert_eq!(header(&r, "access-control-allow-origin"), Some("*"));
    assert_eq!(header(&r, "access-control-expose-headers"), Some("*"));

    // Stored byte for byte where the gateway and hb402 look for it.
    let stored = node.get(DATAITEMS_BUCKET, &dataitem_key(&item.id())).await;
    assert_eq!(stored.status(), StatusCode::OK);
    assert_eq!(stored.bytes().await.unwrap(), item.to_bytes());
    assert_eq!(node.handle.counters().objects_stored(), 1);

    // `Accept: application/json` selects the JSON codec; the `tx` alias behaves the same.
    let other = text_item("second");
    let json = node
        .anon(Method::POST, "/~bundler@1.0/tx?codec-device=ans104@1.0")
        .header("accept", "application/json")
        .body(other.to_bytes())
        .send()
        .await
        .unwrap();
    assert_eq!(json.status(), StatusCode::OK);
    assert_eq!(header(&json, "content-type"), Some("application/json"));
    let other_id = other.id().to_string();
    assert_eq!(header(&json, "id"), Some(other_id.as_str()));
    let body: serde_json::Value = json.json().await.unwrap();
    assert_eq!(body["id"], other_id.as_str());
    assert!(body["timestamp"].as_u64().is_some());
    assert_eq!(node.handle.counters().requests(RouteKind::BundlerItem), 2);
    assert_eq!(node.handle.counters().objects_stored(), 2);
}

#[tokio::test]
async fn bundler_refuses_invalid_items_and_stores_nothing() {
    let node = start().await;
    let mut tampered = text_item("original data").to_bytes();
    let last = tampered.len() - 1;
    tampered[last] ^= 0x01;
    let r = node
        .anon(Method::POST, "/~bundler@1.0/item?codec-device=ans104@1.0")
        .body(tampered.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(header(&r, "error"), Some("invalid-item"));
    assert_eq!(header(&r, "details"), Some("signature-verification-failed"));

    let json = node
        .anon(Method::POST, "/~bundler@1.0/item?codec-device=ans104@1.0")
        .header("accept", "application/json")
        .body(b"not a data item".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(json.status(), StatusCode::BAD_REQUEST);
    let body: serde_json::Value = json.json().await.unwrap();
    assert_eq!(body["error"], "invalid-item");
    assert_eq!(body["details"], "malformed-item");

    // Without the codec the node does not read the body as a DataItem.
    let no_codec = node
        .anon(Method::POST, "/~bundler@1.0/item")
        .header("content-type", "application/octet-stream")
        .body(text_item("fine").to_bytes())
        .send()
        .await
        .unwrap();
    assert_eq!(no_codec.status(), StatusCode::BAD_REQUEST);
    assert_eq!(header(&no_codec, "details"), Some("unsigned-item"));

    assert_eq!(node.handle.counters().objects_stored(), 0);
    let bucket = node
        .s3(Method::HEAD, &format!("/~s3@1.0/{DATAITEMS_BUCKET}"))
        .send()
        .await
        .unwrap();
    assert_eq!(bucket.status(), StatusCode::NOT_FOUND, "nothing was stored");
}

#[tokio::test]
async fn gateway_serves_the_data_with_its_tags() {
    let node = start().await;
    let item = signed_item(
        vec![
            Tag::new("Content-Type", "text/plain"),
            Tag::new("Data-Protocol", "ao"),
            Tag::new("Device-Test", "~s3@1.0"),
            // Tags must not break HTTP framing or override the node's own headers.
            Tag::new("Content-Length", "1"),
            Tag::new("id", "forged"),
            Tag::new("Bad Name", "x"),
        ],
        b"Hello Load S3",
    );
    assert_eq!(node.upload(&item).await.status(), StatusCode::OK);
    let r = node
        .anon(Method::GET, &format!("/{}", item.id()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "content-type"), Some("text/plain"));
    assert_eq!(header(&r, "data-protocol"), Some("ao"));
    assert_eq!(header(&r, "device-test"), Some("~s3@1.0"));
    let id = item.id().to_string();
    assert_eq!(header(&r, "id"), Some(id.as_str()));
    let owner = URL_SAFE_NO_PAD.encode(item.header().owner());
    assert_eq!(header(&r, "owner"), Some(owner.as_str()));
    assert_eq!(header(&r, "ao-body-key"), Some("data"));
    assert_eq!(header(&r, "access-control-allow-origin"), Some("*"));
    assert_eq!(r.bytes().await.unwrap(), "Hello Load S3");

    let head = node
        .anon(Method::HEAD, &format!("/{}", item.id()))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    assert_eq!(header(&head, "content-type"), Some("text/plain"));

    let untyped = signed_item(vec![], b"\x00\x01");
    node.upload(&untyped).await;
    let r = node
        .anon(Method::GET, &format!("/{}", untyped.id()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(header(&r, "content-type").is_none());
    assert_eq!(r.bytes().await.unwrap(), b"\x00\x01".as_slice());

    let unknown = text_item("never uploaded");
    let missing = node
        .anon(Method::GET, &format!("/{}", unknown.id()))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert_eq!(node.handle.counters().requests(RouteKind::Gateway), 4);
}

#[tokio::test]
async fn meta_address_is_a_43_character_address() {
    let node = start().await;
    let r = node
        .anon(Method::GET, "/~meta@1.0/info/address")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "content-type"), Some("text/plain"));
    let address = r.text().await.unwrap();
    assert_eq!(address.len(), 43);
    assert!(URL_SAFE_NO_PAD.decode(&address).is_ok());
    assert_eq!(node.handle.counters().requests(RouteKind::Meta), 1);
}

#[tokio::test]
async fn counters_count_every_request_once() {
    let node = start().await;
    let counters = node.handle.counters();
    assert_eq!(counters.total_requests(), 0);
    node.create_bucket("count").await;
    node.put("count", "a", b"1").await;
    node.put("count", "b", b"2").await;
    node.get("count", "a").await;
    node.get("count", "missing").await;
    node.anon(Method::GET, "/~s3@1.0/count/a")
        .send()
        .await
        .unwrap(); // no auth: still counted
    node.anon(Method::GET, "/not/a/route").send().await.unwrap();
    assert_eq!(counters.requests(RouteKind::CreateBucket), 1);
    assert_eq!(counters.requests(RouteKind::PutObject), 2);
    assert_eq!(counters.requests(RouteKind::GetObject), 3);
    assert_eq!(counters.requests(RouteKind::Other), 1);
    assert_eq!(counters.requests(RouteKind::Gateway), 0);
    assert_eq!(counters.total_requests(), 7);
    assert_eq!(counters.objects_stored(), 2);
    let per_kind: u64 = RouteKind::ALL.iter().map(|k| counters.requests(*k)).sum();
    assert_eq!(per_kind, counters.total_requests());
}
