//! stub
pub fn app() {}
