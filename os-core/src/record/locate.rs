//! Turning a record into the repository and digest a step works on.

use crate::oci::digest::Digest;
use crate::oci::reference::{ImageRef, RegistryRef};

use super::{ErrorCode, Origin, Record};

/// The repository and digest a record names, for steps that need both.
pub fn located(record: &Record, origin: Origin, step: &str) -> Result<(RegistryRef, Digest), Record> {
    let fail = |code: ErrorCode, message: String| {
        let mut failed = record.clone();
        failed.fail(step, code, format!("{origin}: {message}"));
        failed
    };
    let Some(image) = record.image() else {
        return Err(fail(ErrorCode::MissingField, "record has no \"image\"".into()));
    };
    let digest = match record.digest() {
        Ok(Some(digest)) => digest,
        _ => {
            return Err(fail(
                ErrorCode::MissingField,
                "record has no \"digest\": run os-digest first".into(),
            ));
        }
    };
    match image.parse::<ImageRef>() {
        Ok(ImageRef::Registry(repository)) if repository.tag.is_none() && repository.digest.is_none() => {
            Ok((repository, digest))
        }
        Ok(ImageRef::Registry(_)) => Err(fail(
            ErrorCode::BadReference,
            format!("field \"image\" must name a repository without tag or digest: {image:?}"),
        )),
        Ok(ImageRef::Layout(_)) => Err(fail(
            ErrorCode::Unsupported,
            format!("{image} is an OCI layout: signatures live in registries; import it first"),
        )),
        Err(error) => Err(fail(ErrorCode::BadReference, format!("field \"image\": {error}"))),
    }
}
