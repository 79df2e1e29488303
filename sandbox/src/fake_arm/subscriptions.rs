//! `GET /subscriptions/{id}`: the subscription's `tenantId`, which the approval policy
//! uses to tell the requester's tenant. A test sets which tenant owns a subscription, or
//! makes one unreadable (403 `AuthorizationFailed` with ARM's message, the same one the
//! [`super::rbac`] enforcement answers, as another tenant's subscription is to our
//! identity); unknown ones answer 404 `SubscriptionNotFound`.

use serde_json::json;

use super::{Answer, FakeArm, Shared};

impl FakeArm {
    pub fn set_subscription_tenant(&self, subscription: &str, tenant: &str) {
        self.shared().world().subscription_tenants.insert(subscription.to_ascii_lowercase(), Some(tenant.to_owned()));
    }
    /// Our identity may not read this subscription.
    pub fn deny_subscription(&self, subscription: &str) {
        self.shared().world().subscription_tenants.insert(subscription.to_ascii_lowercase(), None);
    }
}

pub(super) fn get(shared: &Shared, subscription: &str) -> Answer {
    match shared.world().subscription_tenants.get(subscription) {
        Some(Some(tenant)) => Answer::json(
            200,
            json!({
                "id": format!("/subscriptions/{subscription}"),
                "subscriptionId": subscription,
                "tenantId": tenant,
                "displayName": format!("sandbox {subscription}"),
                "state": "Enabled",
            }),
        ),
        Some(None) => super::rbac::authorization_failed(
            super::rbac::SANDBOX_OBJECT_ID,
            super::rbac::SANDBOX_OBJECT_ID,
            "Microsoft.Resources/subscriptions/read",
            &format!("/subscriptions/{subscription}"),
        ),
        None => {
            Answer::error(404, "SubscriptionNotFound", format!("The subscription '{subscription}' could not be found."))
        }
    }
}
