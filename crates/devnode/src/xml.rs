//! The XML the device writes and reads. Like `dev_s3:build_list_objects_xml/2` and
//! `build_delete_objects_xml/1`, values are spliced in as they are, without XML escaping, and
//! DeleteObjects keys are cut out of the request with the regular expression `<Key>(.*?)</Key>`
//! (no entity decoding).

use std::fmt::Write as _;

use crate::clock;
use crate::listing::Listing;

const XML_DECL: &str = r#"<?xml version="1.0" encoding="UTF-8"?>"#;
const S3_NS: &str = "http://s3.amazonaws.com/doc/2006-03-01/";

/// The owner the S3 backend (MinIO) reports for every object in a v1 listing.
const OWNER_DISPLAY_NAME: &str = "minio";
const OWNER_ID: &str = "02d6176db174dc93cb1b899f7c6078f08654445fe8cf1b6ce98d8855f66bdbf4";

/// The echoed request values of a listing.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ListEcho<'a> {
    pub(crate) bucket: &'a str,
    pub(crate) prefix: &'a str,
    pub(crate) marker: &'a str,
    pub(crate) delimiter: &'a str,
    pub(crate) max_keys: usize,
}

/// `<ListBucketResult>`, element for element as the device builds it.
pub(crate) fn list_bucket_result(echo: ListEcho<'_>, listing: &Listing) -> String {
    let mut xml = String::new();
    xml.push_str(XML_DECL);
    let _ = write!(
        xml,
        r#"<ListBucketResult xmlns="{S3_NS}"><Name>{}</Name><Prefix>{}</Prefix><Marker>{}</Marker><MaxKeys>{}</MaxKeys><IsTruncated>{}</IsTruncated>"#,
        echo.bucket, echo.prefix, echo.marker, echo.max_keys, listing.is_truncated
    );
    if let Some(next) = &listing.next_marker {
        let _ = write!(xml, "<NextMarker>{next}</NextMarker>");
    }
    if !echo.delimiter.is_empty() {
        let _ = write!(xml, "<Delimiter>{}</Delimiter>", echo.delimiter);
    }
    for meta in &listing.contents {
        let _ = write!(
            xml,
            "<Contents><Key>{}</Key><LastModified>{}</LastModified><ETag>{}</ETag><Size>{}</Size>\
             <StorageClass>STANDARD</StorageClass><Owner><DisplayName>{OWNER_DISPLAY_NAME}</DisplayName>\
             <ID>{OWNER_ID}</ID></Owner></Contents>",
            meta.key,
            clock::iso8601(meta.last_modified_ms),
            meta.etag,
            meta.size
        );
    }
    for prefix in &listing.common_prefixes {
        let _ = write!(
            xml,
            "<CommonPrefixes><Prefix>{prefix}</Prefix></CommonPrefixes>"
        );
    }
    xml.push_str("</ListBucketResult>");
    xml
}

/// `<DeleteResult>` reporting every key as deleted (S3 reports absent keys as deleted too).
pub(crate) fn delete_result(keys: &[String]) -> String {
    let mut xml = String::new();
    xml.push_str(XML_DECL);
    let _ = write!(xml, r#"<DeleteResult xmlns="{S3_NS}">"#);
    for key in keys {
        let _ = write!(
            xml,
            "<Deleted><Key>{key}</Key><DeleteMarker>false</DeleteMarker></Deleted>"
        );
    }
    xml.push_str("</DeleteResult>");
    xml
}

fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    haystack
        .get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

/// Every match of `<Key>(.*?)</Key>` (Erlang `re`, global, `.` not matching `\n`).
pub(crate) fn extract_keys(body: &[u8]) -> Vec<Vec<u8>> {
    const OPEN: &[u8] = b"<Key>";
    const CLOSE: &[u8] = b"</Key>";
    let mut keys = Vec::new();
    let mut from = 0;
    while let Some(open) = find(body, OPEN, from) {
        let start = open + OPEN.len();
        match find(body, CLOSE, start) {
            Some(close) if !body[start..close].contains(&b'\n') => {
                keys.push(body[start..close].to_vec());
                from = close + CLOSE.len();
            }
            // The lazy group cannot cross a newline: no match starts here; try the next `<Key>`.
            Some(_) => from = open + 1,
            None => break,
        }
    }
    keys
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::listing::Listing;
    use crate::store::ObjectMeta;

    #[test]
    fn extracts_keys_like_the_regex() {
        let body = b"<Delete><Object><Key>a/b</Key></Object><Object><Key>c &amp; d</Key></Object></Delete>";
        assert_eq!(
            extract_keys(body),
            vec![b"a/b".to_vec(), b"c &amp; d".to_vec()]
        );
        assert_eq!(
            extract_keys(b"<Key>x\n</Key><Key>y</Key>"),
            vec![b"y".to_vec()]
        );
        assert_eq!(extract_keys(b"<Key><Key>z</Key>"), vec![b"<Key>z".to_vec()]);
        assert_eq!(extract_keys(b"<Key></Key>"), vec![Vec::<u8>::new()]);
        assert!(extract_keys(b"<Key>open").is_empty());
        assert!(extract_keys(b"").is_empty());
    }

    #[test]
    fn renders_a_listing() {
        let listing = Listing {
            contents: vec![ObjectMeta {
                key: "a&b".into(),
                size: 3,
                etag: "\"e\"".into(),
                last_modified_ms: 1_735_689_600_000,
                expires_at_ms: None,
            }],
            common_prefixes: vec!["d/".into()],
            is_truncated: true,
            next_marker: Some("d/".into()),
        };
        let echo = ListEcho {
            bucket: "b",
            prefix: "",
            marker: "",
            delimiter: "/",
            max_keys: 2,
        };
        let xml = list_bucket_result(echo, &listing);
        assert!(xml.starts_with(
            r#"<?xml version="1.0" encoding="UTF-8"?><ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>b</Name><Prefix></Prefix><Marker></Marker><MaxKeys>2</MaxKeys><IsTruncated>true</IsTruncated><NextMarker>d/</NextMarker><Delimiter>/</Delimiter><Contents><Key>a&b</Key><LastModified>2025-01-01T00:00:00Z</LastModified><ETag>"e"</ETag><Size>3</Size><StorageClass>STANDARD</StorageClass>"#
        ));
        assert!(
            xml.ends_with(
                "<CommonPrefixes><Prefix>d/</Prefix></CommonPrefixes></ListBucketResult>"
            )
        );
        assert_eq!(
            delete_result(&["k".into()]),
            r#"<?xml version="1.0" encoding="UTF-8"?><DeleteResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Deleted><Key>k</Key><DeleteMarker>false</DeleteMarker></Deleted></DeleteResult>"#
        );
    }
}
