//! `publish`: sends one batch to the control plane. Upserts and deletes are idempotent, so a
//! retried or replayed batch leaves the control plane as one run would.

use crate::control_plane::{ControlPlane, Upserted};
use crate::error::Result;
use crate::model::{Batch, Chunk, Kind, PublishOutput};

pub async fn publish(batch: Batch, control_plane: &impl ControlPlane) -> Result<PublishOutput> {
    match batch {
        Batch::Assets { runtime_id, upserts, deletes, next } => {
            let (mut created, mut updated, mut deleted) = (0, 0, 0);
            for document in &upserts {
                match control_plane.upsert_api(&runtime_id, document).await? {
                    Upserted::Created => created += 1,
                    Upserted::Updated => updated += 1,
                }
            }
            for api_id in &deletes {
                if control_plane.delete_api(&runtime_id, api_id).await? {
                    deleted += 1;
                }
            }
            tracing::info!(runtime_id, created, updated, deleted, "assets published");
            Ok(PublishOutput {
                kind: Kind::Assets,
                runtime_id,
                created,
                updated,
                deleted,
                metrics_sent: 0,
                next: next.map(Chunk::Assets),
            })
        }
        Batch::Metrics { runtime_id, metrics } => {
            control_plane.send_metrics(&runtime_id, &metrics).await?;
            tracing::info!(runtime_id, timestamp = metrics.timestamp, "metrics sent");
            Ok(PublishOutput {
                kind: Kind::Metrics,
                runtime_id,
                created: 0,
                updated: 0,
                deleted: 0,
                metrics_sent: 1,
                next: None,
            })
        }
    }
}
