//! Requests a follower hands to the leader, and the leader's replies.

use serde::{Deserialize, Serialize};

use crate::error::StoreError;
use crate::types::{NodeId, WriteRequest, WriteResponse};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ForwardRequest {
    Write(WriteRequest),
    AddMember {
        id: NodeId,
        addr: String,
        learner_only: bool,
    },
    Promote {
        id: NodeId,
    },
    Remove {
        id: NodeId,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub id: NodeId,
    pub addr: String,
    pub is_learner: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ForwardOk {
    Write(WriteResponse),
    Members(Vec<Member>),
}

pub type ForwardReply = Result<ForwardOk, StoreError>;
