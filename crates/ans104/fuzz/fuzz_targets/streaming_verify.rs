//! The streaming verifier never panics, whatever the bytes and the chunking, and agrees with the
//! whole-item parse and verification.

#![no_main]

use hb402_ans104::{DataItem, Error, StreamingVerifier};
use hb402_ans104_fuzz::ChunkedInput;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let input = ChunkedInput::new(data);
    let bytes = input.item;

    let mut verifier = StreamingVerifier::new(input.max_header_bytes);
    let mut pushed = Ok(());
    let mut header_seen = false;
    for chunk in input.chunks() {
        match verifier.push(chunk) {
            Ok(Some(_)) => {
                assert!(!header_seen, "the header is yielded once");
                header_seen = true;
            }
            Ok(None) => {}
            Err(e) => {
                pushed = Err(e);
                break;
            }
        }
    }
    let verifier_header = verifier.header().cloned();
    let streamed = pushed.and_then(|()| verifier.finish());

    // Agreement with the whole-item path holds only under the same header bound.
    if input.max_header_bytes != hb402_ans104::DEFAULT_MAX_HEADER_BYTES {
        return;
    }
    let whole = DataItem::parse(bytes);
    match &streamed {
        Ok(verified) => {
            let item = whole.expect("a streamed item that verifies parses whole");
            assert_eq!(
                item.verify(),
                Ok(()),
                "a streamed item that verifies verifies whole"
            );
            assert_eq!(&verified.header, item.header());
            assert_eq!(verified.id, item.id());
            assert_eq!(verified.data_size, item.data().len() as u64);
            assert_eq!(verified.size, bytes.len() as u64);
        }
        // The header parsed and the signature check refused it: the same header parses whole.
        // (Verifying it again would double the cost of every execution; the streamed and whole
        // messages are compared on the items that do verify, above.)
        Err(
            Error::InvalidSignature | Error::InvalidOwner { .. } | Error::MalformedSignature { .. },
        ) => {
            let item = whole.expect("a streamed header that parsed parses whole");
            assert_eq!(Some(item.header()), verifier_header.as_ref());
        }
        // Refused while parsing the header, or an unverifiable type: the whole path refuses too.
        Err(_) => {
            if let Ok(item) = whole {
                assert!(
                    item.verify().is_err(),
                    "whole-item verification accepts what streaming refused"
                );
            }
        }
    }
});
