//! Checks a proxy's projected ServiceAccount token with the API server: a TokenReview
//! for audience `seam` says whether the token is genuine and which ServiceAccount it
//! belongs to. The Identity service signs only that ServiceAccount's SPIFFE id. The token
//! itself is never logged nor put into an error.

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, TokenReviewStatus};
use kube::api::{Api, PostParams};

/// The audience Seam's projected tokens are minted for.
pub const AUDIENCE: &str = "seam";

/// What a Kubernetes username of a ServiceAccount starts with.
const SERVICE_ACCOUNT_USER_PREFIX: &str = "system:serviceaccount:";

/// The ServiceAccount a token was proven to belong to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceAccount {
    pub namespace: String,
    pub name: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    #[error("the ServiceAccount token is not authenticated: {0}")]
    NotAuthenticated(String),
    #[error(
        "the ServiceAccount token is not for audience {AUDIENCE:?} (the API server accepted it for {0:?}); project it with audience {AUDIENCE:?}"
    )]
    WrongAudience(Vec<String>),
    #[error(
        "the token's user {0:?} is not a ServiceAccount (system:serviceaccount:NAMESPACE:NAME)"
    )]
    NotServiceAccount(String),
    #[error("cannot check the ServiceAccount token: the TokenReview failed: {0}")]
    Api(#[source] kube::Error),
}

/// Reviews tokens through the API server the client talks to.
#[derive(Clone)]
pub struct TokenReviewer {
    client: kube::Client,
}

impl TokenReviewer {
    pub fn new(client: kube::Client) -> Self {
        Self { client }
    }

    /// The ServiceAccount `token` belongs to, once the API server has authenticated it
    /// for audience `seam`.
    pub async fn review(&self, token: &str) -> Result<ServiceAccount, ReviewError> {
        let request = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_owned()),
                audiences: Some(vec![AUDIENCE.to_owned()]),
            },
            ..TokenReview::default()
        };
        let reviewed = Api::<TokenReview>::all(self.client.clone())
            .create(&PostParams::default(), &request)
            .await
            .map_err(ReviewError::Api)?;
        service_account_of(reviewed.status.unwrap_or_default())
    }
}

/// Accepts a review's status only when it is authenticated, for audience `seam`, and
/// names a ServiceAccount.
fn service_account_of(status: TokenReviewStatus) -> Result<ServiceAccount, ReviewError> {
    if status.authenticated != Some(true) {
        return Err(ReviewError::NotAuthenticated(
            status
                .error
                .filter(|error| !error.is_empty())
                .unwrap_or_else(|| "the API server gave no reason".to_owned()),
        ));
    }
    // An API server that does not report audiences has checked none; refuse rather
    // than accept a token minted for another audience.
    let audiences = status.audiences.unwrap_or_default();
    if !audiences.iter().any(|audience| audience == AUDIENCE) {
        return Err(ReviewError::WrongAudience(audiences));
    }
    let username = status
        .user
        .and_then(|user| user.username)
        .unwrap_or_default();
    let Some((namespace, name)) = username
        .strip_prefix(SERVICE_ACCOUNT_USER_PREFIX)
        .and_then(|rest| rest.split_once(':'))
        .filter(|(namespace, name)| {
            !namespace.is_empty() && !name.is_empty() && !name.contains(':')
        })
    else {
        return Err(ReviewError::NotServiceAccount(username));
    };
    Ok(ServiceAccount {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::authentication::v1::UserInfo;

    fn status(authenticated: bool, audiences: &[&str], username: &str) -> TokenReviewStatus {
        TokenReviewStatus {
            authenticated: Some(authenticated),
            audiences: Some(audiences.iter().map(|a| (*a).to_owned()).collect()),
            user: Some(UserInfo {
                username: Some(username.to_owned()),
                ..UserInfo::default()
            }),
            error: None,
        }
    }

    #[test]
    fn only_an_authenticated_service_account_token_for_seam_is_accepted() {
        let accepted =
            service_account_of(status(true, &["seam"], "system:serviceaccount:shop:api")).unwrap();
        assert_eq!(
            accepted,
            ServiceAccount {
                namespace: "shop".into(),
                name: "api".into()
            }
        );
        let refused = |status| service_account_of(status).unwrap_err().to_string();
        assert!(
            refused(status(
                true,
                &["https://kubernetes.default.svc"],
                "system:serviceaccount:shop:api"
            ))
            .contains("not for audience \"seam\""),
        );
        assert!(refused(status(true, &[], "system:serviceaccount:shop:api")).contains("audience"));
        for user in [
            "alice",
            "system:serviceaccount:shop",
            "system:serviceaccount::api",
            "system:serviceaccount:a:b:c",
        ] {
            assert!(
                refused(status(true, &["seam"], user)).contains("is not a ServiceAccount"),
                "{user}"
            );
        }
        let mut expired = status(false, &[], "");
        expired.error = Some("token has expired".into());
        assert_eq!(
            refused(expired),
            "the ServiceAccount token is not authenticated: token has expired"
        );
    }
}
