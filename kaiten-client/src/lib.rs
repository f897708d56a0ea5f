//! Typed async client for the Kaiten REST API.
//!
//! (Crate docs with a compiled quickstart are written with the implementation.)

pub mod models;
mod client;
mod error;
mod query;
mod secret;

pub use client::{ClientStats, KaitenClient, KaitenClientBuilder, RetryPolicy};
pub use error::{Error, Result};
pub use models::{
    Board, Card, CardState, CardType, Column, Condition, Lane, PropertyDefinition, Record, SelectValue, Space, Tag,
    User,
};
pub use query::{CardQuery, OrderDirection, PageRequest};
pub use secret::Secret;
