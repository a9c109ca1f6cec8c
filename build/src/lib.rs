//! `ironpod build`: Dockerfiles built layer by layer, every RUN step inside a microVM.
//!
//! The parts, from the outside in: [`dockerfile`] reads a Dockerfile into stages of steps
//! (the syntax is `parse-dockerfile`'s); [`expand`] substitutes build arguments and
//! environment variables in a step's words as Docker's shell lexer does; [`ignore`] decides
//! which files of the context a `.dockerignore` leaves out.

pub mod builder;
pub mod config;
pub mod context;
pub mod copy;
pub mod copy_from;
pub mod dockerfile;
pub mod error;
pub mod expand;
pub mod glob;
pub mod ignore;
pub mod imagefs;
pub mod output;
pub mod run;
pub mod steps;
