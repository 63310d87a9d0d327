//! Real processes for tests: redis-server on a free port, recording upstreams, gateways.
//!
//! How the tests judge, so that each can fail:
//!
//! - **Money** is checked against what vendors received, not against the
//!   ledger's own history: [`money::assert_ledger_matches_vendors`] requires
//!   one standing debit, at the expected final price, per request a
//!   recording upstream received whole, no other standing debit, and `used`
//!   equal to their sum.
//! - **"Never forwarded"** means [`upstream::RecordingUpstream::reached`] is
//!   zero: a request whose body broke off at the vendor was forwarded all the
//!   same. `count()` is what the vendor received whole.
//! - **Corpora and fuzzers** declare an outcome for every case (or compare
//!   with a model) and require a floor of cases on each side, so a gateway
//!   that refuses everything, or accepts everything, fails.
//! - **No wall-clock assertions.** Tests wait for the condition
//!   ([`wait::wait_until`], up to [`http::GENEROUS`]) and say what they saw
//!   if it never comes; vendors hold answers at a [`upstream::Gate`] the test
//!   opens, instead of pauses a loaded machine may outlast. Only lower bounds
//!   (which load can only make truer) and hang bounds remain.
//! - **The API description** is an oracle too: every in-process gateway's
//!   client checks each usage-API and admin answer against
//!   `docs/openapi.json` ([`openapi::check`]): status, content type,
//!   headers and a body valid under the operation's schema.
//! - **Exactness tests** run with a ledger timeout no load can reach (5 s)
//!   and report every status, the ledger's `used` and the vendor's counts
//!   when they fail ([`money::Tally`]).
#![allow(dead_code)]

pub mod abort;
pub mod access_log;
pub mod breaking_upstream;
pub mod cluster;
pub mod gateway;
pub mod http;
pub mod metrics;
pub mod money;
pub mod openapi;
pub mod process;
pub mod receiver;
pub mod redis;
pub mod relay;
pub mod sentinel;
pub mod tls;
pub mod upstream;
pub mod wait;
