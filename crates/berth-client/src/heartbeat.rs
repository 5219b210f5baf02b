//! Batched heartbeats ([`Client::heartbeat`]) and lease history ([`Client::history`]).

use berth_api::{
    HeartbeatLease, HeartbeatRequest, HeartbeatResponse, LeaseHistory, MAX_HEARTBEAT_ITEMS,
};
use reqwest::Method;

use crate::{Client, ClientError};

impl Client {
    /// `POST /v1alpha1/heartbeats`: renews every lease in `leases` for `holder` in one round
    /// trip per [`MAX_HEARTBEAT_ITEMS`] leases. Answers one result per lease, in order: renewed
    /// (`acquired: true`), lost (`acquired: false` with the current state) or rejected (with
    /// `error`).
    ///
    /// # Errors
    /// Any [`ClientError`] of a request; results of earlier chunks are then lost to the caller,
    /// who renews again.
    pub async fn heartbeat(
        &self,
        holder: &str,
        leases: &[HeartbeatLease],
    ) -> Result<HeartbeatResponse, ClientError> {
        let url = self.url(&["v1alpha1", "heartbeats"])?;
        let mut results = Vec::with_capacity(leases.len());
        for chunk in leases.chunks(MAX_HEARTBEAT_ITEMS) {
            let body = HeartbeatRequest {
                holder: holder.to_owned(),
                leases: chunk.to_vec(),
            };
            let answer: HeartbeatResponse = self
                .json(self.request(Method::POST, url.clone())?.json(&body))
                .await?;
            if answer.results.len() != chunk.len() {
                return Err(ClientError::Decode(
                    format!(
                        "heartbeat answered {} results for {} leases",
                        answer.results.len(),
                        chunk.len()
                    )
                    .into(),
                ));
            }
            results.extend(answer.results);
        }
        Ok(HeartbeatResponse { results })
    }

    /// `GET …/leases/{name}/history`: the lease now and its ended grants, newest first, at most
    /// `limit` (the server's default when `None`); `None` if the lease never existed.
    ///
    /// # Errors
    /// Any [`ClientError`].
    pub async fn history(
        &self,
        namespace: &str,
        name: &str,
        limit: Option<u32>,
    ) -> Result<Option<LeaseHistory>, ClientError> {
        let url = self.lease_url(namespace, name, Some("history"))?;
        let mut request = self.request(Method::GET, url)?;
        if let Some(limit) = limit {
            request = request.query(&[("limit", limit.to_string())]);
        }
        match self.json(request).await {
            Ok(h) => Ok(Some(h)),
            Err(ClientError::Api { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }
}
