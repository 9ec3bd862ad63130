//! pare: make container images safe to run.
//!
//! The data flow is one straight line, each stage a module:
//! [`reference`] → source ([`registry`], [`layout`]) → [`rootfs`] → [`trace`] → [`plan`] →
//! [`layer`] writer → sink ([`registry`], [`layout`]), orchestrated by [`harden`] and described
//! by [`report`].

pub mod archive;
pub mod auth;
pub mod batch;
pub mod digest;
pub mod elf;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod growing;
pub mod harden;
pub mod image;
pub mod inspect;
pub mod layer;
pub mod layout;
pub mod ldcache;
pub mod packages;
pub mod plan;
pub mod policy;
pub mod probe;
pub mod progress;
pub mod reference;
pub mod referrer;
pub mod registry;
pub mod report;
pub mod rootfs;
pub mod sbom;
pub mod sign;
pub mod source;
pub mod targuard;
pub mod trace;

pub use error::{Error, Result};
