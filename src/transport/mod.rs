//! Where images come from and go to: a registry (the distribution API, with its auth and
//! retries), an OCI image layout directory, a `docker save` archive; the referrers (SBOM,
//! signatures) stored beside an image. Each transport reads ([`source`]) and writes
//! ([`sink`]); the rest of pare names a transport only through [`crate::reference::ImageRef`]
//! and never matches on it.

pub mod archive;
pub mod auth;
pub mod layout;
pub mod referrer;
pub mod registry;
pub mod sink;
pub mod source;
