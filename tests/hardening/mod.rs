//! Hostile clients and many instances: smuggling and path-confusion corpora,
//! slow clients, secrets, and exact admission across gateway processes.

mod admin_input;
mod instances;
mod line_endings;
mod paths;
mod secrets;
mod slow_clients;
mod smuggling;
mod timers;
