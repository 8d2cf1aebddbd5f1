//! The incremental header parser, the whole-header parse and the whole-item parse agree on every
//! input, whatever the chunking, and whatever parses serializes back byte for byte.

#![no_main]

use hb402_ans104::{DataItem, Error, Header, HeaderParser, parse_header};
use hb402_ans104_fuzz::ChunkedInput;
use libfuzzer_sys::fuzz_target;

/// Feeds `chunks` to a fresh parser: the header and the item offset at which the data starts, or
/// the error (at the end of the stream, the parser's truncation error).
fn parse_chunked(limit: usize, chunks: &[&[u8]]) -> Result<(Header, usize), Error> {
    let mut parser = HeaderParser::new(limit);
    let mut offset = 0;
    let mut found = None;
    for chunk in chunks {
        match parser.push(chunk)? {
            Some(parsed) => {
                assert!(found.is_none(), "the header is yielded once");
                assert!(parsed.consumed <= chunk.len());
                assert!(parser.is_done());
                assert_eq!(parser.needed(), None);
                found = Some((parsed.header, offset + parsed.consumed));
            }
            None => {
                if found.is_none() {
                    // Only header bytes are buffered, never more than the bound.
                    assert_eq!(parser.buffered(), offset + chunk.len());
                    assert!(parser.buffered() <= limit.max(hb402_ans104::MIN_MAX_HEADER_BYTES));
                    if let Some(needed) = parser.needed() {
                        assert!(needed > parser.buffered());
                    }
                }
            }
        }
        offset += chunk.len();
    }
    found.ok_or_else(|| parser.truncated())
}

fuzz_target!(|data: &[u8]| {
    let input = ChunkedInput::new(data);
    let bytes = input.item;

    let whole = parse_header(bytes, input.max_header_bytes);
    let chunked = parse_chunked(input.max_header_bytes, &input.chunks());
    match (&whole, &chunked) {
        (Ok(header), Ok((chunked_header, data_start))) => {
            assert_eq!(header, chunked_header);
            assert_eq!(header.data_offset(), *data_start as u64);
        }
        (Err(a), Err(b)) => assert_eq!(a, b, "whole and chunked parses fail differently"),
        _ => panic!("whole parse {whole:?} but chunked parse {chunked:?}"),
    }

    if let Ok(header) = &whole {
        let offset = header.data_offset() as usize;
        assert!(offset <= bytes.len());
        assert_eq!(header.to_bytes(), &bytes[..offset]);
        // Exercise the accessors that derive values from untrusted fields.
        let _ = header.id().to_string();
        let _ = header.owner_address();
        let _ = header.content_type();
        let _ = header.is_portable();
    }

    // The whole-item parse uses the default bound.
    let item = DataItem::parse(bytes);
    let default_whole = if input.max_header_bytes == hb402_ans104::DEFAULT_MAX_HEADER_BYTES {
        whole
    } else {
        parse_header(bytes, hb402_ans104::DEFAULT_MAX_HEADER_BYTES)
    };
    match (&item, &default_whole) {
        (Ok(item), Ok(header)) => {
            assert_eq!(item.header(), header);
            assert_eq!(
                item.to_bytes(),
                bytes,
                "serialize after parse is not the identity"
            );
            assert_eq!(item.data(), &bytes[header.data_offset() as usize..]);
        }
        (Err(a), Err(b)) => assert_eq!(a, b),
        _ => panic!("DataItem::parse {item:?} disagrees with parse_header {default_whole:?}"),
    }
});
