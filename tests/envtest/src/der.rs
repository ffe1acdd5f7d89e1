//! Just enough DER to give a client certificate several `O` (group) attributes.
//!
//! rcgen's `DistinguishedName` holds one value per attribute type, but Kubernetes reads
//! every `O` of a client certificate as a group. We let rcgen build and sign the
//! certificate, then swap the TBSCertificate's subject for one we encode here and sign
//! the new TBSCertificate with the CA key. Only definite-length, low-tag-number DER is
//! handled, which is all rcgen emits.

use base64::Engine;

/// Why a certificate could not be rewritten.
#[derive(Debug)]
pub(crate) enum RewriteError<E> {
    /// The input did not look like an X.509 certificate.
    Der(&'static str),
    /// The signer failed.
    Sign(E),
}

/// Encodes one TLV with a definite length.
fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const UTF8_STRING: u8 = 0x0c;
const BIT_STRING: u8 = 0x03;
const OID_CN: &[u8] = &[0x06, 0x03, 0x55, 0x04, 0x03];
const OID_O: &[u8] = &[0x06, 0x03, 0x55, 0x04, 0x0a];

fn rdn(oid: &[u8], value: &str) -> Vec<u8> {
    let mut atv = oid.to_vec();
    atv.extend(tlv(UTF8_STRING, value.as_bytes()));
    tlv(SET, &tlv(SEQUENCE, &atv))
}

/// An X.501 Name `O=<group>…, CN=<user>`, one RDN per attribute.
pub(crate) fn name(common_name: &str, organizations: &[&str]) -> Vec<u8> {
    let mut rdns = Vec::new();
    for o in organizations {
        rdns.extend(rdn(OID_O, o));
    }
    rdns.extend(rdn(OID_CN, common_name));
    tlv(SEQUENCE, &rdns)
}

/// Splits `input` into its first TLV (whole encoding) and the rest.
fn split_tlv(input: &[u8]) -> Option<(&[u8], &[u8])> {
    let first_len = *input.get(1)?;
    let (header, len) = if first_len < 0x80 {
        (2, first_len as usize)
    } else {
        let n = (first_len & 0x7f) as usize;
        if n == 0 || n > 4 {
            return None;
        }
        let bytes = input.get(2..2 + n)?;
        (
            2 + n,
            bytes.iter().fold(0usize, |acc, b| (acc << 8) | *b as usize),
        )
    };
    let end = header.checked_add(len)?;
    (end <= input.len()).then(|| input.split_at(end))
}

/// The content octets of a TLV with the given tag.
fn content(tlv_bytes: &[u8], tag: u8) -> Option<&[u8]> {
    if *tlv_bytes.first()? != tag {
        return None;
    }
    let first_len = *tlv_bytes.get(1)?;
    let header = if first_len < 0x80 {
        2
    } else {
        2 + (first_len & 0x7f) as usize
    };
    tlv_bytes.get(header..)
}

/// All TLVs directly inside `content`.
fn children(mut content: &[u8]) -> Option<Vec<&[u8]>> {
    let mut out = Vec::new();
    while !content.is_empty() {
        let (one, rest) = split_tlv(content)?;
        out.push(one);
        content = rest;
    }
    Some(out)
}

/// Returns `cert` with its subject replaced by `subject` (a DER Name) and re-signed by
/// `sign` (which must use the algorithm named in the certificate).
pub(crate) fn replace_subject<E>(
    cert: &[u8],
    subject: &[u8],
    sign: impl FnOnce(&[u8]) -> Result<Vec<u8>, E>,
) -> Result<Vec<u8>, RewriteError<E>> {
    let bad = RewriteError::Der;
    let (whole, _) = split_tlv(cert).ok_or(bad("certificate"))?;
    let parts = children(content(whole, SEQUENCE).ok_or(bad("certificate"))?)
        .ok_or(bad("certificate fields"))?;
    let [tbs, sig_alg, _sig] = parts[..] else {
        return Err(bad("certificate has not 3 fields"));
    };
    let mut fields =
        children(content(tbs, SEQUENCE).ok_or(bad("tbs"))?).ok_or(bad("tbs fields"))?;
    // version [0] is optional; then serial, signature, issuer, validity, subject.
    let subject_idx = if fields.first().and_then(|f| f.first()) == Some(&0xa0) {
        5
    } else {
        4
    };
    let slot = fields.get_mut(subject_idx).ok_or(bad("no subject"))?;
    if slot.first() != Some(&SEQUENCE) {
        return Err(bad("subject is not a SEQUENCE"));
    }
    *slot = subject;
    let new_tbs = tlv(SEQUENCE, &fields.concat());
    let signature = sign(&new_tbs).map_err(RewriteError::Sign)?;
    let mut bits = vec![0u8];
    bits.extend(signature);
    let mut body = new_tbs;
    body.extend_from_slice(sig_alg);
    body.extend(tlv(BIT_STRING, &bits));
    Ok(tlv(SEQUENCE, &body))
}

/// PEM-encodes `der` with the given label.
pub(crate) fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lengths_round_trip() {
        let big = vec![7u8; 300];
        let enc = tlv(SEQUENCE, &big);
        assert_eq!(&enc[..4], &[0x30, 0x82, 0x01, 0x2c]);
        let (one, rest) = split_tlv(&enc).unwrap();
        assert!(rest.is_empty());
        assert_eq!(content(one, SEQUENCE).unwrap(), &big[..]);
    }

    #[test]
    fn garbage_is_rejected_not_panicking() {
        for input in [
            &[][..],
            &[0x30],
            &[0x30, 0x85, 1, 2, 3, 4, 5],
            &[0x30, 0x05, 1],
        ] {
            assert!(replace_subject::<()>(input, &[0x30, 0], |_| Ok(vec![])).is_err());
        }
    }
}
