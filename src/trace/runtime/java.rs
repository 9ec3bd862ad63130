//! Java.

use crate::trace::Rule;

#[derive(Default)]
pub(crate) struct Java;

impl Rule for Java {}
