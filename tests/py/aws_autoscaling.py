"""A local AWS API server for herald's EC2 Auto Scaling actuator: moto's server mode.

moto (5.2) serves the Auto Scaling API (groups, instances, desired capacity,
TerminateInstanceInAutoScalingGroup, lifecycle hooks, request signing, the XML
protocol), but it does not implement lifecycle actions: CompleteLifecycleAction and
RecordLifecycleActionHeartbeat answer 500 NotImplemented, and a terminated instance
never waits in `Terminating:Wait`. This launcher adds exactly those three behaviours
to moto's own backend model, following the AWS documentation:

- TerminateInstanceInAutoScalingGroup on a group with an
  `autoscaling:EC2_INSTANCE_TERMINATING` hook puts the instance in
  `Terminating:Wait` (it stays listed by DescribeAutoScalingGroups, no longer counts
  as in service) and lowers the desired capacity if asked;
- CompleteLifecycleAction (CONTINUE or ABANDON) on a waiting instance terminates it
  and removes it from the group; on any other instance it is a ValidationError, as
  in AWS ("No active Lifecycle Action found");
- RecordLifecycleActionHeartbeat is accepted for waiting instances only.

Everything else is moto, unmodified. The test drives it with boto3 over JSON lines:
stdin commands, stdout events (`{"kind": ...}`).

Commands:
  {"cmd": "group", "name": G, "hook": H, "desired": N, "max": M}
      -> {"kind": "group", "instances": [ids]}
  {"cmd": "describe", "name": G}
      -> {"kind": "describe", "desired": N, "instances": {id: lifecycle_state}}
  {"cmd": "terminate", "instance": I}       (as an operator would, no decrement)
      -> {"kind": "terminated"}
"""

import argparse
import json
import logging
import sys

import boto3
from moto.autoscaling import models as asg_models
from moto.autoscaling import responses as asg_responses
from moto.autoscaling.exceptions import ValidationError
from moto.core.responses import EmptyResult
from moto.server import ThreadedMotoServer

TERMINATING = "autoscaling:EC2_INSTANCE_TERMINATING"
WAIT = "Terminating:Wait"


def _terminating_hook(backend, group_name, hook_name=None):
    for hook in backend.lifecycle_hooks.values():
        if (
            hook.auto_scaling_group_name == group_name
            and hook.lifecycle_transition == TERMINATING
            and (hook_name is None or hook.name == hook_name)
        ):
            return hook
    return None


def _instance_state(backend, instance_id):
    for group in backend.autoscaling_groups.values():
        for state in group.instance_states:
            if state.instance.id == instance_id:
                return group, state
    raise ValidationError(f"Instance [{instance_id}] is not part of any Auto Scaling group")


_moto_terminate = asg_models.AutoScalingBackend.terminate_instance


def terminate_instance(self, instance_id, should_decrement):
    group, state = _instance_state(self, instance_id)
    if _terminating_hook(self, group.name) is None:
        return _moto_terminate(self, instance_id, should_decrement)
    original = group.desired_capacity
    state.lifecycle_state = WAIT
    if should_decrement:
        group.desired_capacity = original - 1
    else:
        # AWS launches a replacement at once.
        group.set_desired_capacity(group.desired_capacity)
    return asg_models.TerminateInstanceActivity(state.instance, original)


def _waiting(backend, group_name, hook_name, instance_id):
    if _terminating_hook(backend, group_name, hook_name) is None:
        raise ValidationError(f"No lifecycle hook named {hook_name} on {group_name}")
    group = backend.autoscaling_groups.get(group_name)
    for state in group.instance_states if group else []:
        if state.instance.id == instance_id and state.lifecycle_state == WAIT:
            return group, state
    raise ValidationError(f"No active Lifecycle Action found with instance ID {instance_id}")


def complete_lifecycle_action(self):
    backend = self.autoscaling_backend
    result = self._get_param("LifecycleActionResult")
    if result not in ("CONTINUE", "ABANDON"):
        raise ValidationError("LifecycleActionResult must be CONTINUE or ABANDON")
    group, state = _waiting(
        backend,
        self._get_param("AutoScalingGroupName"),
        self._get_param("LifecycleHookName"),
        self._get_param("InstanceId"),
    )
    group.instance_states = [s for s in group.instance_states if s is not state]
    backend.ec2_backend.terminate_instances([state.instance.id])
    return EmptyResult()


def record_lifecycle_action_heartbeat(self):
    _waiting(
        self.autoscaling_backend,
        self._get_param("AutoScalingGroupName"),
        self._get_param("LifecycleHookName"),
        self._get_param("InstanceId"),
    )
    return EmptyResult()


asg_models.AutoScalingBackend.terminate_instance = terminate_instance
asg_responses.AutoScalingResponse.complete_lifecycle_action = complete_lifecycle_action
asg_responses.AutoScalingResponse.record_lifecycle_action_heartbeat = (
    record_lifecycle_action_heartbeat
)


def say(**event):
    print(json.dumps(event), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--region", default="us-east-1")
    args = parser.parse_args()
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=args.port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{args.port}"
    creds = dict(
        endpoint_url=endpoint,
        region_name=args.region,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    ec2 = boto3.client("ec2", **creds)
    asg = boto3.client("autoscaling", **creds)
    say(kind="ready", endpoint=endpoint)
    try:
        for line in sys.stdin:
            if not line.strip():
                continue
            cmd = json.loads(line)
            if cmd["cmd"] == "group":
                image = ec2.describe_images()["Images"][0]["ImageId"]
                template = f"{cmd['name']}-template"
                ec2.create_launch_template(
                    LaunchTemplateName=template,
                    LaunchTemplateData={"ImageId": image, "InstanceType": "c7g.large"},
                )
                asg.create_auto_scaling_group(
                    AutoScalingGroupName=cmd["name"],
                    LaunchTemplate={"LaunchTemplateName": template, "Version": "$Latest"},
                    MinSize=0,
                    MaxSize=cmd["max"],
                    DesiredCapacity=cmd["desired"],
                    AvailabilityZones=[f"{args.region}a"],
                )
                asg.put_lifecycle_hook(
                    LifecycleHookName=cmd["hook"],
                    AutoScalingGroupName=cmd["name"],
                    LifecycleTransition=TERMINATING,
                    HeartbeatTimeout=300,
                    DefaultResult="CONTINUE",
                )
                group = asg.describe_auto_scaling_groups(AutoScalingGroupNames=[cmd["name"]])
                ids = [i["InstanceId"] for i in group["AutoScalingGroups"][0]["Instances"]]
                say(kind="group", instances=ids)
            elif cmd["cmd"] == "describe":
                group = asg.describe_auto_scaling_groups(AutoScalingGroupNames=[cmd["name"]])
                g = group["AutoScalingGroups"][0]
                states = {i["InstanceId"]: i["LifecycleState"] for i in g["Instances"]}
                say(kind="describe", desired=g["DesiredCapacity"], instances=states)
            elif cmd["cmd"] == "terminate":
                asg.terminate_instance_in_auto_scaling_group(
                    InstanceId=cmd["instance"], ShouldDecrementDesiredCapacity=False
                )
                say(kind="terminated")
            else:
                say(kind="error", error=f"unknown command {cmd['cmd']!r}")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
