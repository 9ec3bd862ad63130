//! pare: make container images safe to run.
//!
//! The data flow is one straight line, each stage a module:
//! [`reference`] → source ([`registry`], [`layout`]) → [`rootfs`] → [`trace`] → [`plan`] →
//! [`layer`] writer → sink ([`registry`], [`layout`]), orchestrated by [`harden`] and described
//! by [`report`].

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
pub mod ldcache;
pub mod packages;
pub mod plan;
pub mod policy;
pub mod probe;
pub mod progress;
pub mod reference;
pub mod report;
pub mod rootfs;
pub mod sbom;
pub mod sign;
pub mod targuard;
pub mod trace;
pub mod transport;

pub use error::{Error, Result};
