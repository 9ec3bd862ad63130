//! The rule kit: what every evidence rule builds on, and nothing a rule owns. The model of a
//! trace ([`model`]), the shared context and its work queue ([`cx`]), the dynamic loader every
//! rule asks to load an object ([`ld`]), the content store ([`contents`]), the classes of paths
//! all rules agree on ([`paths`]), how a trace is printed ([`render`]) and what an interpreter
//! is ([`interpreter`]). The kit never imports a rule (`tests/architecture.rs` checks it).

pub(crate) mod contents;
pub(crate) mod cx;
pub(crate) mod interpreter;
pub(crate) mod ld;
pub(crate) mod model;
pub(crate) mod paths;
pub(crate) mod render;

pub use contents::{Contents, LayerContents, MAX_OBJECT_BYTES};
pub use cx::*;
pub use interpreter::{Interpreter, Started};
pub(crate) use ld::State;
pub use ld::default_dirs;
pub use model::*;
pub use paths::*;
pub use render::{json, render_kept, render_tree};
