//! Search (search.html): parameters, index extraction and query planning.

pub mod extract;
pub mod query;
pub mod registry;
pub mod request;
pub mod text;
