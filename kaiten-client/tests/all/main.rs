//! Integration tests of the Kaiten client against wiremock servers, one scenario per behaviour.

mod config;
mod endpoints;
mod errors;
mod paging;
mod rate_limit;
mod support;
mod webhooks;
