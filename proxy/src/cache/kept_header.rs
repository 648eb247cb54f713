//! Where a stored object keeps the response header its fresh hits send, in HTTP/1.1 wire
//! form. The store holds one slot per object and counts it in the object's weight; the edge
//! builds the bytes (`edge/hit_header.rs`) and names whom they were built for: the route.
//! A header that cannot be kept is remembered as such, so its hits do not try again.

use std::any::Any;
use std::sync::{Arc, RwLock, Weak};

use bytes::Bytes;
use http::StatusCode;

/// A stored object's kept header, empty until a hit builds it.
#[derive(Default)]
pub(crate) struct KeptHeader(RwLock<Option<Kept>>);

/// The bytes, and whom they were built for.
struct Kept {
    /// Never upgraded, only compared: it keeps the owner's allocation (not what the owner
    /// holds), so that address is not reused while this is kept.
    owner: Option<Weak<dyn Any + Send + Sync>>,
    /// `None`: the header cannot be kept for this owner.
    wire: Option<Wire>,
}

/// A response header in wire form: the status line and fields, each line ending in CRLF.
#[derive(Clone)]
pub(crate) struct Wire {
    /// The status the first line names.
    pub(crate) status: StatusCode,
    /// The body's length, which the fields carry as `Content-Length`.
    pub(crate) content_length: usize,
    /// The bytes.
    pub(crate) head: Bytes,
}

impl KeptHeader {
    /// What was kept for `owner`, if that is whom it was built for: the header, or `None`
    /// when it cannot be kept.
    pub(crate) fn get<O: Any + Send + Sync>(&self, owner: Option<&Arc<O>>) -> Option<Option<Wire>> {
        let kept = self.0.read().unwrap_or_else(|p| p.into_inner());
        let kept = kept.as_ref()?;
        let same = match (&kept.owner, owner) {
            (None, None) => true,
            (Some(k), Some(o)) => std::ptr::addr_eq(k.as_ptr(), Arc::as_ptr(o)),
            _ => false,
        };
        same.then(|| kept.wire.clone())
    }

    /// Keeps `wire`, built for `owner` (`None`: it cannot be kept), in place of what was kept.
    pub(crate) fn keep<O: Any + Send + Sync>(&self, owner: Option<&Arc<O>>, wire: Option<Wire>) {
        let owner = owner.map(|o| {
            let weak: Weak<O> = Arc::downgrade(o);
            weak as Weak<dyn Any + Send + Sync>
        });
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Some(Kept { owner, wire });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(text: &'static str) -> Wire {
        Wire {
            status: StatusCode::OK,
            content_length: 0,
            head: Bytes::from_static(text.as_bytes()),
        }
    }

    #[test]
    fn a_kept_header_is_given_only_to_whom_it_was_built_for() {
        let (a, b) = (Arc::new(1u8), Arc::new(2u8));
        let slot = KeptHeader::default();
        assert!(slot.get(Some(&a)).is_none());
        slot.keep(Some(&a), Some(wire("for a")));
        assert_eq!(&slot.get(Some(&a)).unwrap().unwrap().head[..], b"for a");
        assert!(slot.get(Some(&b)).is_none());
        assert!(slot.get::<u8>(None).is_none());
        slot.keep::<u8>(None, Some(wire("for none")));
        assert_eq!(
            &slot.get::<u8>(None).unwrap().unwrap().head[..],
            b"for none"
        );
        assert!(slot.get(Some(&a)).is_none());
    }

    #[test]
    fn a_header_that_cannot_be_kept_is_remembered_for_whom_it_was_tried() {
        let (a, b) = (Arc::new(1u8), Arc::new(2u8));
        let slot = KeptHeader::default();
        slot.keep(Some(&a), None);
        assert!(matches!(slot.get(Some(&a)), Some(None)));
        // Another owner tries for itself.
        assert!(slot.get(Some(&b)).is_none());
        slot.keep(Some(&b), Some(wire("for b")));
        assert!(slot.get(Some(&a)).is_none());
    }

    #[test]
    fn a_dropped_owners_address_is_not_taken_for_it_while_kept() {
        let slot = KeptHeader::default();
        let a = Arc::new([7u64; 4]);
        slot.keep(Some(&a), Some(wire("for a")));
        drop(a);
        // The kept Weak holds the allocation: a new owner never gets its address.
        let others: Vec<_> = (0..64).map(|_| Arc::new([7u64; 4])).collect();
        assert!(others.iter().all(|o| slot.get(Some(o)).is_none()));
    }
}
