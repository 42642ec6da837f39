//! EC2 Auto Scaling through the official AWS SDK for Rust: the calls herald makes on
//! the edge group.
//!
//! - Scale out: `SetDesiredCapacity` to the group's desired capacity + 1 (never above
//!   the group's `MaxSize`). The new instance boots, its edge registers in etcd with
//!   its instance id as edge id, and herald fills an HAProxy slot for it.
//! - Release (after herald drained an edge for a scale-in):
//!   `TerminateInstanceInAutoScalingGroup` with `ShouldDecrementDesiredCapacity`, so
//!   the group does not replace it.
//! - The lifecycle hook on `autoscaling:EC2_INSTANCE_TERMINATING` holds every
//!   terminating instance in `Terminating:Wait`, whoever started the termination (herald,
//!   an operator, AZ rebalancing); [`crate::io::lifecycle`] drains its edge, then completes
//!   the action with `CONTINUE`.
//!
//! Region, credentials and endpoint come from the usual AWS environment and config
//! (`AWS_REGION`, `AWS_PROFILE`, instance profile, `AWS_ENDPOINT_URL`, …). HTTPS goes
//! through rustls with ring.

use std::time::Duration;

use aws_config::timeout::TimeoutConfig;
use aws_config::BehaviorVersion;
use aws_sdk_autoscaling::error::DisplayErrorContext;
use aws_sdk_autoscaling::types::{AutoScalingGroup, LifecycleState};
use aws_sdk_autoscaling::Client;
use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};

/// Longest one AWS call may take, retries included.
const CALL_TIMEOUT: Duration = Duration::from_secs(20);

/// The lifecycle action result herald sends once an edge has drained.
const CONTINUE: &str = "CONTINUE";

/// One Auto Scaling group of edges and its termination hook.
#[derive(Debug, Clone)]
pub struct AutoScaling {
    client: Client,
    group: String,
    hook: String,
}

impl AutoScaling {
    /// Loads the AWS configuration from the environment. Fails only when no region is
    /// configured anywhere (nothing is called yet).
    pub async fn from_env(group: &str, hook: &str) -> Result<AutoScaling, String> {
        let https = aws_smithy_http_client::Builder::new()
            .tls_provider(Provider::Rustls(CryptoMode::Ring))
            .build_https();
        let shared = aws_config::defaults(BehaviorVersion::latest())
            .http_client(https)
            .timeout_config(
                TimeoutConfig::builder()
                    .operation_timeout(CALL_TIMEOUT)
                    .connect_timeout(Duration::from_secs(3))
                    .build(),
            )
            .load()
            .await;
        if shared.region().is_none() {
            return Err(
                "--scale aws needs an AWS region (AWS_REGION, or a region in the AWS config profile)"
                    .to_owned(),
            );
        }
        Ok(AutoScaling {
            client: Client::new(&shared),
            group: group.to_owned(),
            hook: hook.to_owned(),
        })
    }

    /// The group's name.
    pub fn group(&self) -> &str {
        &self.group
    }

    async fn describe(&self) -> Result<AutoScalingGroup, String> {
        let out = self
            .client
            .describe_auto_scaling_groups()
            .auto_scaling_group_names(&self.group)
            .send()
            .await
            .map_err(|e| format!("DescribeAutoScalingGroups: {}", DisplayErrorContext(&e)))?;
        out.auto_scaling_groups()
            .first()
            .cloned()
            .ok_or_else(|| format!("no Auto Scaling group named {:?}", self.group))
    }

    /// Raises the desired capacity by one; returns what was done, in words.
    pub async fn scale_out(&self) -> Result<String, String> {
        let group = self.describe().await?;
        let desired = group.desired_capacity().unwrap_or(0);
        let max = group.max_size().unwrap_or(i32::MAX);
        if desired >= max {
            return Err(format!(
                "group {} is at its MaxSize {max}; raise it to scale out",
                self.group
            ));
        }
        self.client
            .set_desired_capacity()
            .auto_scaling_group_name(&self.group)
            .desired_capacity(desired + 1)
            .honor_cooldown(false)
            .send()
            .await
            .map_err(|e| format!("SetDesiredCapacity: {}", DisplayErrorContext(&e)))?;
        Ok(format!("desired capacity {desired} -> {}", desired + 1))
    }

    /// Terminates `instance` and lowers the desired capacity with it. The lifecycle hook
    /// then holds it in `Terminating:Wait` until herald completes the action.
    pub async fn release(&self, instance: &str) -> Result<String, String> {
        self.client
            .terminate_instance_in_auto_scaling_group()
            .instance_id(instance)
            .should_decrement_desired_capacity(true)
            .send()
            .await
            .map_err(|e| {
                format!(
                    "TerminateInstanceInAutoScalingGroup {instance}: {}",
                    DisplayErrorContext(&e)
                )
            })?;
        Ok(format!("terminating {instance}"))
    }

    /// Instances of the group held by the termination hook.
    pub async fn terminating(&self) -> Result<Vec<String>, String> {
        let group = self.describe().await?;
        Ok(group
            .instances()
            .iter()
            .filter(|i| i.lifecycle_state() == Some(&LifecycleState::TerminatingWait))
            .filter_map(|i| i.instance_id().map(str::to_owned))
            .collect())
    }

    /// Lets the termination of `instance` go on.
    pub async fn complete(&self, instance: &str) -> Result<(), String> {
        self.client
            .complete_lifecycle_action()
            .auto_scaling_group_name(&self.group)
            .lifecycle_hook_name(&self.hook)
            .instance_id(instance)
            .lifecycle_action_result(CONTINUE)
            .send()
            .await
            .map_err(|e| {
                format!(
                    "CompleteLifecycleAction {instance}: {}",
                    DisplayErrorContext(&e)
                )
            })?;
        Ok(())
    }

    /// Extends the hook's heartbeat timeout while `instance` is still draining.
    pub async fn heartbeat(&self, instance: &str) -> Result<(), String> {
        self.client
            .record_lifecycle_action_heartbeat()
            .auto_scaling_group_name(&self.group)
            .lifecycle_hook_name(&self.hook)
            .instance_id(instance)
            .send()
            .await
            .map_err(|e| {
                format!(
                    "RecordLifecycleActionHeartbeat {instance}: {}",
                    DisplayErrorContext(&e)
                )
            })?;
        Ok(())
    }
}
