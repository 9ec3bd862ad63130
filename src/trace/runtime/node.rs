//! Node.

use crate::trace::Rule;

#[derive(Default)]
pub(crate) struct Node;

impl Rule for Node {}
