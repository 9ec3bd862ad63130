//! PHP.

use crate::trace::Rule;

pub(crate) struct Php;

impl Rule for Php {}
