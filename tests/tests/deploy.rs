//! The deployment files (`deploy/aws/pushfleet.yaml`, `deploy/systemd/`) checked
//! against real tools and the real binaries, so that they cannot drift from the code:
//!
//! - `cfn-lint` reports nothing on the CloudFormation template;
//! - every systemd unit has the keys the deployment relies on, and passes
//!   `systemd-analyze verify` and a hardening threshold of `systemd-analyze security`
//!   (when systemd-analyze is installed: Debian package `systemd`);
//! - every `--flag` in the example env files and in the env files that the template's
//!   cloud-init writes exists in that binary's `--help`; every `ETCD_*` variable is an
//!   etcd flag; every variable `haproxy/haproxy.cfg` expands is set, and HAProxy
//!   accepts the file with those values;
//! - numbers that must agree do: the edge's drain and its unit's `TimeoutStopSec`, the
//!   termination lifecycle hook and herald's poll, heartbeat and drain timeout, HAProxy's
//!   slots and herald's, descriptor limits and `fs.nr_open`;
//! - every kernel setting in the sysctl file is explained by a comment and exists;
//! - the instances' IAM roles grant what their boot scripts and herald call, and
//!   nothing else.
//!
//! The template's user data is checked as an instance would run it: intrinsic
//! functions resolved (every optional feature on), then each script run by bash in a
//! sandbox, with the commands that would touch the machine or the network stubbed
//! (`curl` answers as the instance metadata service, `aws` as SSM and S3). The files
//! it writes are parsed the way systemd parses an `EnvironmentFile=`.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use pushfleet_tests::process::{binary, log_dir};
use pushfleet_tests::workspace_root;
use serde_json::Value;

/// The units in `deploy/systemd`; each reads its flags from `/etc/pushfleet/<name>.env`.
const UNITS: [&str; 3] = [
    "pushfleet-edge.service",
    "pushfleet-relay.service",
    "herald.service",
];

/// The instance id the test's instance metadata service answers.
const INSTANCE_ID: &str = "i-0123456789abcdef0";

// ---------------------------------------------------------------------------------
// cfn-lint
// ---------------------------------------------------------------------------------

#[test]
fn cloudformation_template_passes_cfn_lint() {
    let template = deploy_path("aws/pushfleet.yaml");
    let output = Command::new("cfn-lint")
        .arg("--")
        .arg(&template)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run cfn-lint ({e}): install it with scripts/setup.sh (pip install cfn-lint)")
        });
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success() && report.trim().is_empty(),
        "cfn-lint {} ({}):\n{report}",
        template.display(),
        output.status
    );
}

// ---------------------------------------------------------------------------------
// systemd units
// ---------------------------------------------------------------------------------

#[test]
fn systemd_units_have_what_the_deployment_relies_on() {
    for name in UNITS {
        let unit = Unit::load(&deploy_path(&format!("systemd/{name}")));
        let require = |section: &str, key: &str| -> String {
            unit.get(section, key)
                .unwrap_or_else(|| panic!("{name}: [{section}] {key}= is missing"))
                .to_owned()
        };
        let env_file = require("Service", "EnvironmentFile");
        let base = env_file
            .strip_prefix("/etc/pushfleet/")
            .and_then(|f| f.strip_suffix(".env"))
            .unwrap_or_else(|| {
                panic!("{name}: EnvironmentFile={env_file} is not /etc/pushfleet/<name>.env")
            });
        assert!(
            deploy_path(&format!("systemd/{base}.env")).exists(),
            "{name}: no example deploy/systemd/{base}.env for its EnvironmentFile"
        );
        let exec = require("Service", "ExecStart");
        assert!(
            exec.starts_with("/usr/local/bin/") && exec.contains("$ARGS"),
            "{name}: ExecStart={exec} should run /usr/local/bin/<binary> $ARGS"
        );
        for (key, wanted) in [
            ("Restart", "on-failure"),
            ("KillSignal", "SIGTERM"),
            ("DynamicUser", "yes"),
            ("NoNewPrivileges", "yes"),
            ("ProtectSystem", "strict"),
            ("RestartPreventExitStatus", "64"),
        ] {
            assert_eq!(require("Service", key), wanted, "{name}: {key}=");
        }
        for key in ["RestartSec", "TimeoutStopSec", "LimitNOFILE"] {
            require("Service", key);
        }
        assert_eq!(
            unit.get("Install", "WantedBy"),
            Some("multi-user.target"),
            "{name}: [Install] WantedBy="
        );
    }
}

#[test]
fn systemd_units_pass_systemd_analyze() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!(
            "systemd-analyze is not installed (Debian package systemd): verify skipped; \
             the units' keys are still checked by systemd_units_have_what_the_deployment_relies_on"
        );
        return;
    }
    let dir = Scratch::new("units");
    for name in UNITS {
        // verify also checks that ExecStart's program exists: point it at the build.
        let unit = Unit::load(&deploy_path(&format!("systemd/{name}")));
        let program = unit.program();
        let built = binary(&program).display().to_string();
        let text = unit
            .text
            .replace(&format!("/usr/local/bin/{program}"), &built);
        let copy = dir.join(name);
        write(&copy, &text);
        let verify = run(Command::new("systemd-analyze")
            .args(["verify", "--recursive-errors=no"])
            .arg(&copy));
        assert_verified(&verify, name);
        // Exposure 2.0 or lower ("OK"); losing a hardening line raises it.
        let security = run(Command::new("systemd-analyze")
            .args(["security", "--offline=yes", "--threshold=20"])
            .arg(&copy));
        assert!(
            security.status.success(),
            "systemd-analyze security {name}: exposure above 2.0\n{}",
            String::from_utf8_lossy(&security.stdout)
        );
    }
    // The drop-in on Debian's own haproxy.service, where that package is installed.
    let debian_unit = Path::new("/lib/systemd/system/haproxy.service");
    if debian_unit.exists() {
        let unit_dir = dir.join("haproxy-unit");
        std::fs::create_dir_all(unit_dir.join("haproxy.service.d")).unwrap();
        std::fs::copy(debian_unit, unit_dir.join("haproxy.service")).unwrap();
        std::fs::copy(
            deploy_path("systemd/haproxy.service.d/pushfleet.conf"),
            unit_dir.join("haproxy.service.d/pushfleet.conf"),
        )
        .unwrap();
        let verify = run(Command::new("systemd-analyze")
            .env("SYSTEMD_UNIT_PATH", format!("{}:", unit_dir.display()))
            .args(["verify", "--recursive-errors=no", "haproxy.service"]));
        assert_verified(&verify, "haproxy.service");
        assert_verified(&verify, "pushfleet.conf");
    } else {
        eprintln!("haproxy is not installed: its drop-in is not verified");
    }
}

// ---------------------------------------------------------------------------------
// Flags and variables against the binaries
// ---------------------------------------------------------------------------------

#[test]
fn example_env_files_use_only_real_flags() {
    let mut helps = Helps::default();
    for name in UNITS {
        let unit = Unit::load(&deploy_path(&format!("systemd/{name}")));
        let example = unit.example_env();
        let env = parse_environment_file(&read(&example));
        let args = unit.expand_exec_variables(&env);
        assert!(
            !args.trim().is_empty(),
            "{}: no flags for {name}",
            example.display()
        );
        helps.assert_flags_exist(&unit.program(), &args, &example.display().to_string());
    }
    let etcd = parse_environment_file(&read(&deploy_path("systemd/etcd.default")));
    helps.assert_etcd_variables(&etcd, "deploy/systemd/etcd.default");
}

#[test]
fn cloud_init_writes_only_real_flags() {
    let deployment = Deployment::load();
    let mut helps = Helps::default();
    let mut configured = BTreeSet::new();
    let scripts = Scratch::new("user-data");
    for boot in &deployment.boots {
        let path = scripts.join(&format!("{}.sh", boot.resource));
        write(&path, &boot.script);
        let syntax = run(Command::new("bash").arg("-n").arg(&path));
        assert_quiet_success(
            &syntax,
            &format!("bash -n on {}'s user data", boot.resource),
        );
        for (file, text) in &boot.files {
            let place = format!("{}: {file}", boot.resource);
            if let Some(unit) = deployment.unit_reading(file) {
                let args = unit.expand_exec_variables(&parse_environment_file(text));
                assert!(!args.trim().is_empty(), "{place}: no flags");
                helps.assert_flags_exist(&unit.program(), &args, &place);
                configured.insert(unit.name.clone());
            } else if file == "/etc/default/etcd" {
                helps.assert_etcd_variables(&parse_environment_file(text), &place);
                configured.insert("etcd".to_owned());
            }
        }
        // What it installs from the release exists in the repository, where
        // deploy/aws/package.sh takes it from.
        for word in boot.script.split_whitespace() {
            let Some(inside) = word.strip_prefix("/opt/pushfleet/") else {
                continue;
            };
            let source = if let Some(program) = inside.strip_prefix("bin/") {
                binary(program)
            } else if let Some(file) = inside.strip_prefix("systemd/") {
                deploy_path(&format!("systemd/{file}"))
            } else {
                workspace_root().join(inside)
            };
            assert!(
                source.exists(),
                "{}: installs {word}, but the release has no such file ({})",
                boot.resource,
                source.display()
            );
        }
    }
    for wanted in [
        "pushfleet-edge.service",
        "pushfleet-relay.service",
        "herald.service",
        "etcd",
    ] {
        assert!(
            configured.contains(wanted),
            "the template's user data configures no {wanted} (configured: {configured:?})"
        );
    }
}

#[test]
fn instance_roles_grant_what_the_instances_use_and_no_more() {
    let deployment = Deployment::load();
    // Any Auto Scaling group but the edges' must be out of reach.
    let edge_group = format!(
        "arn:aws:autoscaling:{REGION}:{ACCOUNT}:autoScalingGroup:\
         0f1e2d3c-uuid:autoScalingGroupName/EdgeGroup"
    );
    let other_group = edge_group.replace("EdgeGroup", "SomeoneElses");
    for boot in &deployment.boots {
        let place = &boot.resource;
        let grants = deployment.grants_of(place);
        let granted = |action: &str, resource: &str| {
            grants
                .iter()
                .any(|(a, r)| a == action && matches_pattern(r, resource))
        };
        let mut used = BTreeSet::new();
        for call in &boot.aws_calls {
            let (action, resource) = permission_for(call);
            assert!(
                granted(&action, &resource),
                "{place}: `aws {call}` needs {action} on {resource}; its role grants {grants:?}"
            );
            used.insert(action);
        }
        if boot.files.contains_key("/etc/pushfleet/herald.env") {
            for action in HERALD_AUTOSCALING_CALLS {
                // Describe calls take no resource; the others take the group.
                let resource = if action.starts_with("autoscaling:Describe") {
                    "*"
                } else {
                    edge_group.as_str()
                };
                assert!(
                    granted(action, resource),
                    "{place}: herald calls {action}, its role does not grant it on {resource}"
                );
                assert!(
                    resource == "*" || !granted(action, &other_group),
                    "{place}: {action} reaches Auto Scaling groups other than the edges'"
                );
                used.insert(action.to_owned());
            }
        }
        for (action, resource) in &grants {
            assert!(
                used.contains(action),
                "{place}: its role grants {action} on {resource}, which nothing there uses"
            );
        }
    }
}

#[test]
fn haproxy_gets_every_variable_its_config_expands() {
    let config = read(&workspace_root().join("haproxy/haproxy.cfg"));
    let needed = haproxy_variables(&config);
    assert!(!needed.is_empty(), "haproxy.cfg expands no variable?");
    let example = parse_environment_file(&read(&deploy_path("systemd/haproxy.default")));
    let deployment = Deployment::load();
    let written = deployment.written("/etc/default/haproxy");
    for (place, env) in [
        ("deploy/systemd/haproxy.default", &example),
        ("the template's /etc/default/haproxy", &written),
    ] {
        let missing: Vec<&String> = needed.iter().filter(|v| !env.contains_key(*v)).collect();
        assert!(
            missing.is_empty(),
            "{place} does not set {missing:?}, which haproxy/haproxy.cfg expands"
        );
        haproxy_check(env, place);
    }
}

// ---------------------------------------------------------------------------------
// Numbers that must agree
// ---------------------------------------------------------------------------------

#[test]
fn edge_stop_timeout_outlasts_its_drain() {
    let unit = Unit::load(&deploy_path("systemd/pushfleet-edge.service"));
    let stop = parse_duration(unit.get("Service", "TimeoutStopSec").unwrap());
    let mut helps = Helps::default();
    let help = helps.get("pushfleet-server");
    let example = parse_environment_file(&read(&unit.example_env()));
    let deployment = Deployment::load();
    let written = deployment.written("/etc/pushfleet/edge.env");
    for (place, env) in [
        ("edge.env", &example),
        ("the template's edge.env", &written),
    ] {
        let args = unit.expand_exec_variables(env);
        let drain_timeout = parse_duration(&help.value(&args, "--drain-timeout"));
        let drain_spread = parse_duration(&help.value(&args, "--drain-spread"));
        assert!(
            drain_spread < drain_timeout,
            "{place}: --drain-spread must be shorter than --drain-timeout"
        );
        assert!(
            stop >= drain_timeout + Duration::from_secs(10),
            "TimeoutStopSec {stop:?} must exceed {place}'s --drain-timeout {drain_timeout:?} \
             by 10 s at least, or systemd kills the edge before its drain ends"
        );
    }
    // On EC2 the edge id must be the instance id (herald's lifecycle watcher).
    let args = unit.expand_exec_variables(&written);
    assert_eq!(
        help.value(&args, "--edge-id"),
        INSTANCE_ID,
        "the template's edges must run with --edge-id <instance id>"
    );
}

#[test]
fn lifecycle_hook_fits_herald_and_the_drain() {
    let deployment = Deployment::load();
    let mut helps = Helps::default();
    let herald_unit = deployment.unit("herald.service");
    let edge_unit = deployment.unit("pushfleet-edge.service");
    let herald_args =
        herald_unit.expand_exec_variables(&deployment.written("/etc/pushfleet/herald.env"));
    let edge_args = edge_unit.expand_exec_variables(&deployment.written("/etc/pushfleet/edge.env"));
    let herald = helps.get("herald");
    let edge = helps.get("pushfleet-server");

    assert_eq!(herald.value(&herald_args, "--scale"), "aws");
    assert_eq!(
        herald.value(&herald_args, "--aws-edge-group"),
        "EdgeGroup",
        "herald must scale the stack's edge group"
    );
    let group = &deployment.template["Resources"]["EdgeGroup"]["Properties"];
    let hooks = group["LifecycleHookSpecificationList"]
        .as_array()
        .expect("EdgeGroup has no LifecycleHookSpecificationList");
    let hook = hooks
        .iter()
        .find(|h| h["LifecycleTransition"] == "autoscaling:EC2_INSTANCE_TERMINATING")
        .expect("EdgeGroup has no termination lifecycle hook");
    assert_eq!(
        hook["LifecycleHookName"].as_str(),
        Some(herald.value(&herald_args, "--aws-lifecycle-hook").as_str()),
        "the hook's name and herald's --aws-lifecycle-hook differ"
    );
    assert_eq!(hook["DefaultResult"], "CONTINUE");
    let heartbeat_timeout = Duration::from_secs(
        number(&hook["HeartbeatTimeout"]).expect("the hook needs a HeartbeatTimeout"),
    );

    let poll = parse_duration(&herald.value(&herald_args, "--aws-poll"));
    let herald_gives_up = parse_duration(&herald.value(&herald_args, "--aws-drain-timeout"));
    let drain = parse_duration(&edge.value(&edge_args, "--drain-timeout"));
    let lease = parse_duration(&edge.value(&edge_args, "--lease-ttl"));
    // herald sees the instance, the edge drains and leaves etcd, herald sees it gone.
    let whole_drain = poll + drain + lease + poll;
    assert!(
        heartbeat_timeout >= whole_drain,
        "HeartbeatTimeout {heartbeat_timeout:?} < one whole drain without heartbeats \
         (poll + --drain-timeout + lease + poll = {whole_drain:?})"
    );
    let first_heartbeat = herald::io::lifecycle::HEARTBEAT_EVERY + poll;
    assert!(
        heartbeat_timeout > first_heartbeat,
        "HeartbeatTimeout {heartbeat_timeout:?} runs out before herald's first heartbeat \
         ({first_heartbeat:?})"
    );
    assert!(
        herald_gives_up >= drain + lease + poll,
        "herald's --aws-drain-timeout {herald_gives_up:?} gives up before a normal drain ends"
    );
}

#[test]
fn haproxy_and_herald_settings_agree() {
    let mut helps = Helps::default();
    let herald_unit = Unit::load(&deploy_path("systemd/herald.service"));
    let example_haproxy = parse_environment_file(&read(&deploy_path("systemd/haproxy.default")));
    let example_herald = parse_environment_file(&read(&herald_unit.example_env()));
    let deployment = Deployment::load();
    let herald = helps.get("herald");
    for (place, haproxy, herald_env) in [
        ("the examples", example_haproxy, example_herald),
        (
            "the template",
            deployment.written("/etc/default/haproxy"),
            deployment.written("/etc/pushfleet/herald.env"),
        ),
    ] {
        let args = herald_unit.expand_exec_variables(&herald_env);
        let slots: u64 = herald.value(&args, "--haproxy-slots").parse().unwrap();
        assert_eq!(
            haproxy["PUSHFLEET_EDGE_SLOTS"].parse::<u64>().ok(),
            Some(slots),
            "{place}: PUSHFLEET_EDGE_SLOTS and herald's --haproxy-slots differ"
        );
        let agent = format!(
            "{}:{}",
            haproxy["HERALD_AGENT_HOST"], haproxy["HERALD_AGENT_PORT"]
        );
        assert_eq!(
            herald.value(&args, "--agent-listen"),
            agent,
            "{place}: HAProxy's agent checks do not reach herald's --agent-listen"
        );
        assert_eq!(
            herald.value(&args, "--http-listen"),
            haproxy["HERALD_HTTP_ADDR"],
            "{place}: HERALD_HTTP_ADDR is not herald's --http-listen"
        );
        // herald lists its own HAProxy first (a new leader adopts the first one's
        // slots), then the others, all on the runtime API's port.
        let runtime = &haproxy["HAPROXY_RUNTIME"];
        let local = runtime.strip_prefix("ipv4@").unwrap_or(runtime);
        let port = local.rsplit(':').next().unwrap();
        let targets = herald.value(&args, "--haproxy-runtime");
        assert_eq!(
            targets.split(',').next(),
            Some(local),
            "{place}: herald's --haproxy-runtime {targets} does not start with this host's HAProxy"
        );
        assert!(
            targets.split(',').count() >= 2
                && targets.split(',').all(|t| t.ends_with(&format!(":{port}"))),
            "{place}: --haproxy-runtime {targets}: every HAProxy, on port {port}"
        );
        assert!(
            slots >= herald.value(&args, "--scale-max").parse().unwrap_or(0),
            "{place}: fewer HAProxy slots than --scale-max edges"
        );
    }
    let max_edges = number(&deployment.template["Parameters"]["EdgeMaxSize"]["MaxValue"])
        .expect("EdgeMaxSize needs a MaxValue (the HAProxy slot count)");
    let slots = deployment.written("/etc/default/haproxy")["PUSHFLEET_EDGE_SLOTS"]
        .parse::<u64>()
        .unwrap();
    assert!(
        max_edges <= slots,
        "EdgeMaxSize may reach {max_edges} edges, HAProxy has {slots} slots"
    );
}

#[test]
fn descriptor_limits_fit_under_nr_open() {
    let sysctl = sysctl_settings();
    let nr_open: u64 = sysctl["fs.nr_open"].parse().unwrap();
    let mut limits = vec![(
        "haproxy.service.d/pushfleet.conf".to_owned(),
        Unit::load(&deploy_path("systemd/haproxy.service.d/pushfleet.conf")),
    )];
    limits.extend(UNITS.iter().map(|n| {
        (
            (*n).to_owned(),
            Unit::load(&deploy_path(&format!("systemd/{n}"))),
        )
    }));
    for (name, unit) in limits {
        let limit: u64 = unit.get("Service", "LimitNOFILE").unwrap().parse().unwrap();
        assert!(
            limit <= nr_open,
            "{name}: LimitNOFILE={limit} is above fs.nr_open {nr_open} (90-pushfleet-edge.conf)"
        );
    }
    // The edge's clients must fit under its own limit, with room for its other sockets.
    let edge = Unit::load(&deploy_path("systemd/pushfleet-edge.service"));
    let limit: u64 = edge.get("Service", "LimitNOFILE").unwrap().parse().unwrap();
    let args = edge.expand_exec_variables(&parse_environment_file(&read(&edge.example_env())));
    let clients: u64 = Helps::default()
        .get("pushfleet-server")
        .value(&args, "--max-connections")
        .parse()
        .unwrap();
    assert!(
        clients + 1024 <= limit,
        "edge.env: --max-connections {clients} leaves less than 1024 descriptors under LimitNOFILE={limit}"
    );
}

// ---------------------------------------------------------------------------------
// sysctl
// ---------------------------------------------------------------------------------

#[test]
fn every_sysctl_setting_is_explained_and_exists() {
    let path = deploy_path("systemd/sysctl.d/90-pushfleet-edge.conf");
    let text = read(&path);
    let mut previous = "";
    let mut settings = 0;
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            previous = line;
            continue;
        }
        if !line.starts_with('#') && !line.starts_with(';') {
            settings += 1;
            let (key, value) = line
                .split_once('=')
                .unwrap_or_else(|| panic!("line {}: not key = value: {line}", number + 1));
            let key = key.trim();
            assert!(
                previous.starts_with('#'),
                "{}:{}: {key} has no comment just above it",
                path.display(),
                number + 1
            );
            assert!(!value.trim().is_empty(), "{key} has no value");
            let proc = Path::new("/proc/sys").join(key.replace('.', "/"));
            assert!(
                proc.exists(),
                "{key}: no {} on this kernel (misspelt?)",
                proc.display()
            );
        }
        previous = line;
    }
    assert!(
        settings >= 8,
        "only {settings} settings in {}",
        path.display()
    );
}

// ---------------------------------------------------------------------------------
// The template, booted
// ---------------------------------------------------------------------------------

/// Parameters the test sets (the others keep their defaults): every optional feature
/// on, so that its flags are checked too.
const PARAMETERS: [(&str, &str); 6] = [
    ("ArtifactBucket", "release-bucket"),
    ("FixedHostsAmi", "ami-0123456789abcdef0"),
    (
        "CertificateArn",
        "arn:aws:acm:us-east-1:123456789012:certificate/test",
    ),
    ("KeyName", "operators"),
    ("StatsdAddress", "10.0.9.9:8125"),
    ("PublicHeraldStatus", "true"),
];

/// The pseudo parameters' values in the test.
const REGION: &str = "us-east-1";
const ACCOUNT: &str = "123456789012";

/// What herald calls on EC2 Auto Scaling (herald/src/aws.rs): its role must grant
/// these and no other Auto Scaling action.
const HERALD_AUTOSCALING_CALLS: [&str; 6] = [
    "autoscaling:SetDesiredCapacity",
    "autoscaling:TerminateInstanceInAutoScalingGroup",
    "autoscaling:CompleteLifecycleAction",
    "autoscaling:RecordLifecycleActionHeartbeat",
    "autoscaling:DescribeAutoScalingGroups",
    "autoscaling:DescribeAutoScalingInstances",
];

/// The decoded template and what each instance's first boot did: every user data
/// script, resolved, run by bash in a sandbox (paths under /etc, /opt, /usr/local,
/// /tmp and /var moved into it; apt-get, systemctl, sysctl, tar, install and rm
/// stubbed; curl answering as the instance metadata service; aws answering SSM from
/// the template's parameters and recording every call).
struct Deployment {
    template: Value,
    boots: Vec<Boot>,
    units: Vec<Unit>,
}

/// One resource's user data, run.
struct Boot {
    resource: String,
    script: String,
    /// The files it wrote, by their path on the instance.
    files: BTreeMap<String, String>,
    /// Its `aws` command lines.
    aws_calls: Vec<String>,
}

impl Deployment {
    fn load() -> Deployment {
        let template = decode_template(&deploy_path("aws/pushfleet.yaml"));
        let resolver = Resolver::new(&template);
        let resources = template["Resources"]
            .as_object()
            .expect("the template has no Resources");
        let parameters: BTreeMap<String, String> = resources
            .values()
            .filter(|r| r["Type"] == "AWS::SSM::Parameter")
            .map(|r| {
                (
                    resolver.resolve(&r["Properties"]["Name"]),
                    resolver.resolve(&r["Properties"]["Value"]),
                )
            })
            .collect();
        let mut boots = Vec::new();
        for (name, resource) in resources {
            let properties = &resource["Properties"];
            let data = if resource["Type"] == "AWS::EC2::LaunchTemplate" {
                &properties["LaunchTemplateData"]["UserData"]
            } else {
                &properties["UserData"]
            };
            if data.is_null() {
                continue;
            }
            let script = resolver.resolve(data);
            let private_ip = resolver.address_of_instance_launched_from(name);
            boots.push(Boot::run(name, script, &private_ip, &parameters));
        }
        assert!(!boots.is_empty(), "no user data in the template");
        let units = UNITS
            .iter()
            .map(|n| Unit::load(&deploy_path(&format!("systemd/{n}"))))
            .collect();
        Deployment {
            template,
            boots,
            units,
        }
    }

    fn unit(&self, name: &str) -> &Unit {
        self.units.iter().find(|u| u.name == name).unwrap()
    }

    /// The unit whose `EnvironmentFile=` is `path`.
    fn unit_reading(&self, path: &str) -> Option<&Unit> {
        self.units
            .iter()
            .find(|u| u.get("Service", "EnvironmentFile") == Some(path))
    }

    /// The environment file at `path`, as the one instance that writes it wrote it.
    fn written(&self, path: &str) -> BTreeMap<String, String> {
        let found: Vec<&String> = self
            .boots
            .iter()
            .filter_map(|b| b.files.get(path))
            .collect();
        assert_eq!(
            found.len(),
            1,
            "exactly one instance's user data should write {path}"
        );
        parse_environment_file(found[0])
    }

    /// (action, resource) pairs the instance profile of `resource`'s instances allows.
    fn grants_of(&self, resource: &str) -> Vec<(String, String)> {
        let resolver = Resolver::new(&self.template);
        let resources = &self.template["Resources"];
        let profile = &resources[resource]["Properties"]["LaunchTemplateData"]
            ["IamInstanceProfile"]["Arn"]["Fn::GetAtt"][0];
        let Some(profile) = profile.as_str() else {
            return Vec::new();
        };
        let mut grants = Vec::new();
        for role in resources[profile]["Properties"]["Roles"]
            .as_array()
            .expect("an instance profile without Roles")
        {
            let role = role["Ref"].as_str().expect("Roles: [!Ref Role]");
            grants.extend(role_grants(&resources[role], &resolver));
        }
        grants
    }
}

impl Boot {
    fn run(
        resource: &str,
        script: String,
        private_ip: &str,
        parameters: &BTreeMap<String, String>,
    ) -> Boot {
        let sandbox = Scratch::new(&format!("boot-{resource}"));
        let root = sandbox.0.clone();
        let bin = root.join("bin");
        let ssm = root.join("ssm");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::create_dir_all(&ssm).unwrap();
        // What Debian 12 (with the packages the scripts install) already has.
        for dir in EXISTING_DIRECTORIES {
            std::fs::create_dir_all(root.join(dir)).unwrap();
        }
        for (name, body) in STUBS {
            let path = bin.join(name);
            write(&path, &format!("#!/bin/sh\n{body}"));
            let status = run(Command::new("chmod").arg("0755").arg(&path));
            assert!(status.status.success(), "chmod {}", path.display());
        }
        for (name, value) in parameters {
            write(&ssm.join(name.replace('/', "_")), value);
        }
        let boot = root.join("user-data.sh");
        write(&boot, &move_paths_into(&script, &root));
        let path = format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let output = run(Command::new("bash")
            .arg(&boot)
            .env("PATH", path)
            .env("FAKE_INSTANCE_ID", INSTANCE_ID)
            .env("FAKE_PRIVATE_IP", private_ip)
            .env("FAKE_SSM", &ssm)
            .env("FAKE_AWS_LOG", root.join("aws.log")));
        assert_quiet_success(&output, &format!("{resource}'s user data, run"));
        let mut files = BTreeMap::new();
        collect_files(&root, &root, &mut files);
        let aws_calls = std::fs::read_to_string(root.join("aws.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect();
        Boot {
            resource: resource.to_owned(),
            script,
            files,
            aws_calls,
        }
    }
}

/// Directories a boot script may expect to exist (the sandbox creates them).
const EXISTING_DIRECTORIES: [&str; 8] = [
    "tmp",
    "etc/default",
    "etc/haproxy",
    "etc/systemd/system",
    "etc/sysctl.d",
    "usr/local/bin",
    "usr/local/sbin",
    "var/lib/etcd",
];

/// Stand-ins for the commands a boot script runs that would touch this machine or
/// the network. `install -d` creates directories (inside the sandbox); the rest of
/// `install`, and `tar`, `rm`, `apt-get`, `systemctl`, `sysctl`, do nothing.
const STUBS: [(&str, &str); 8] = [
    ("apt-get", "exit 0\n"),
    ("systemctl", "exit 0\n"),
    ("sysctl", "exit 0\n"),
    ("tar", "exit 0\n"),
    ("rm", "exit 0\n"),
    (
        "install",
        "directories=false\n\
         for a in \"$@\"; do [ \"$a\" = -d ] && directories=true; done\n\
         $directories || exit 0\n\
         for a in \"$@\"; do case $a in -*|[0-7][0-7][0-7][0-7]) ;; *) mkdir -p \"$a\" ;; esac; done\n",
    ),
    (
        "curl",
        "for a in \"$@\"; do url=$a; done\n\
         case $url in\n\
           http://169.254.169.254/latest/api/token) echo token ;;\n\
           http://169.254.169.254/latest/meta-data/instance-id) echo \"$FAKE_INSTANCE_ID\" ;;\n\
           http://169.254.169.254/latest/meta-data/local-ipv4) echo \"$FAKE_PRIVATE_IP\" ;;\n\
           *) echo \"curl stub: no answer for $url\" >&2; exit 22 ;;\n\
         esac\n",
    ),
    (
        "aws",
        "echo \"$*\" >> \"$FAKE_AWS_LOG\"\n\
         case \"$1 $2\" in\n\
           'ssm get-parameter')\n\
             while [ $# -gt 0 ]; do [ \"$1\" = --name ] && name=$2; shift; done\n\
             file=\"$FAKE_SSM/$(echo \"$name\" | tr / _)\"\n\
             [ -f \"$file\" ] || { echo \"aws stub: no SSM parameter $name\" >&2; exit 254; }\n\
             cat \"$file\" ;;\n\
           's3 cp') for a in \"$@\"; do last=$a; done; : > \"$last\" ;;\n\
           *) echo \"aws stub: unexpected aws $*\" >&2; exit 1 ;;\n\
         esac\n",
    ),
];

/// `script` with every absolute path under /etc, /opt, /usr/local, /tmp and /var
/// moved under `root` (a path starts a word, or follows `=`, `>` or a quote).
fn move_paths_into(script: &str, root: &Path) -> String {
    const PREFIXES: [&str; 5] = ["/etc/", "/opt/", "/usr/local/", "/tmp/", "/var/"];
    let root = root.display().to_string();
    let mut out = String::with_capacity(script.len());
    let mut previous = '\n';
    for (index, c) in script.char_indices() {
        let starts_path = " \t\n\"'=>".contains(previous)
            && PREFIXES.iter().any(|p| script[index..].starts_with(p));
        if starts_path {
            out.push_str(&root);
        }
        out.push(c);
        previous = c;
    }
    out
}

/// Every file under `dir` but the sandbox's own (stubs, SSM values, the script, the
/// aws log), by its path on the instance.
fn collect_files(root: &Path, dir: &Path, files: &mut BTreeMap<String, String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let relative = path.strip_prefix(root).unwrap().display().to_string();
        if ["bin", "ssm", "user-data.sh", "aws.log"].contains(&relative.as_str()) {
            continue;
        }
        if path.is_dir() {
            collect_files(root, &path, files);
        } else {
            files.insert(format!("/{relative}"), read(&path));
        }
    }
}

/// The template as JSON, decoded by cfn-lint's own loader (short-form tags become
/// `{"Ref": …}`, `{"Fn::Sub": …}`, …).
fn decode_template(path: &Path) -> Value {
    let program = "import json, sys\n\
                   from cfnlint.decode import decode\n\
                   template, problems = decode(sys.argv[1])\n\
                   if problems:\n    sys.exit('\\n'.join(str(p) for p in problems))\n\
                   print(json.dumps(template))\n";
    let output = run(Command::new("python3").arg("-c").arg(program).arg(path));
    assert!(
        output.status.success(),
        "cannot decode {} with cfn-lint's loader (scripts/setup.sh installs it): {}",
        path.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("the decoded template is not JSON")
}

/// Makes strings of template values as CloudFormation would, with every condition
/// true. Parameters take [`PARAMETERS`] or their default; a resource's `Ref` is its
/// logical id; network interfaces get made-up private addresses (10.0.0.11, .12, …
/// in name order), other attributes read `Resource.Attribute`.
struct Resolver<'a> {
    template: &'a Value,
    addresses: BTreeMap<String, String>,
}

impl<'a> Resolver<'a> {
    fn new(template: &'a Value) -> Resolver<'a> {
        let addresses = template["Resources"]
            .as_object()
            .expect("the template has no Resources")
            .iter()
            .filter(|(_, r)| r["Type"] == "AWS::EC2::NetworkInterface")
            .enumerate()
            .map(|(index, (name, _))| (name.clone(), format!("10.0.0.{}", 11 + index)))
            .collect();
        Resolver {
            template,
            addresses,
        }
    }

    /// The private address of the first instance launched from the launch template
    /// `name` on an interface of the stack's; 10.0.1.21 for the groups' instances.
    fn address_of_instance_launched_from(&self, name: &str) -> String {
        let resources = self.template["Resources"].as_object().unwrap();
        resources
            .values()
            .filter(|r| r["Properties"]["LaunchTemplate"]["LaunchTemplateId"]["Ref"] == name)
            .filter_map(|r| {
                r["Properties"]["NetworkInterfaces"][0]["NetworkInterfaceId"]["Ref"].as_str()
            })
            .filter_map(|interface| self.addresses.get(interface).cloned())
            .next()
            .unwrap_or_else(|| "10.0.1.21".to_owned())
    }

    fn resolve(&self, value: &Value) -> String {
        match value {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            Value::Object(map) if map.len() == 1 => {
                let (function, argument) = map.iter().next().unwrap();
                match function.as_str() {
                    "Fn::Base64" => self.resolve(argument),
                    "Fn::Sub" => match argument {
                        Value::String(text) => self.substitute(text, &serde_json::Map::new()),
                        Value::Array(parts) => self.substitute(
                            parts[0].as_str().expect("Fn::Sub text"),
                            parts[1].as_object().expect("Fn::Sub variables"),
                        ),
                        other => panic!("Fn::Sub of {other}"),
                    },
                    "Fn::Join" => {
                        let separator = argument[0].as_str().expect("Fn::Join separator");
                        argument[1]
                            .as_array()
                            .expect("Fn::Join list")
                            .iter()
                            .map(|v| self.resolve(v))
                            .collect::<Vec<_>>()
                            .join(separator)
                    }
                    "Fn::If" => self.resolve(&argument[1]),
                    "Ref" => self.reference(argument.as_str().expect("Ref name")),
                    "Fn::GetAtt" => {
                        let resource = argument[0].as_str().expect("Fn::GetAtt resource");
                        let attribute = argument[1].as_str().expect("Fn::GetAtt attribute");
                        self.attribute(resource, attribute)
                    }
                    other => panic!("the test cannot resolve {other}"),
                }
            }
            other => panic!("cannot make a string of {other}"),
        }
    }

    fn substitute(&self, text: &str, variables: &serde_json::Map<String, Value>) -> String {
        let mut out = String::new();
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let end = rest[start..]
                .find('}')
                .map(|e| start + e)
                .unwrap_or_else(|| panic!("unclosed ${{ in Fn::Sub: {}", &rest[start..]));
            let name = &rest[start + 2..end];
            if let Some(literal) = name.strip_prefix('!') {
                out.push_str(&format!("${{{literal}}}"));
            } else if let Some(value) = variables.get(name) {
                out.push_str(&self.resolve(value));
            } else if let (false, Some((resource, attribute))) =
                (name.starts_with("AWS::"), name.split_once('.'))
            {
                out.push_str(&self.attribute(resource, attribute));
            } else {
                out.push_str(&self.reference(name));
            }
            rest = &rest[end + 1..];
        }
        out.push_str(rest);
        out
    }

    fn attribute(&self, resource: &str, attribute: &str) -> String {
        assert!(
            !self.template["Resources"][resource].is_null(),
            "{resource}.{attribute}: no resource {resource}"
        );
        match (self.addresses.get(resource), attribute) {
            (Some(address), "PrimaryPrivateIpAddress") => address.clone(),
            _ => format!("{resource}.{attribute}"),
        }
    }

    fn reference(&self, name: &str) -> String {
        match name {
            "AWS::Region" => REGION.to_owned(),
            "AWS::AccountId" => ACCOUNT.to_owned(),
            "AWS::StackName" => "pushfleet".to_owned(),
            "AWS::Partition" => "aws".to_owned(),
            "AWS::NoValue" => String::new(),
            _ => {
                let parameter = &self.template["Parameters"][name];
                if let Some((_, value)) = PARAMETERS.iter().find(|(p, _)| *p == name) {
                    (*value).to_owned()
                } else if !parameter.is_null() {
                    assert!(
                        !parameter["Default"].is_null(),
                        "parameter {name} has no default: give it a value in PARAMETERS"
                    );
                    self.resolve(&parameter["Default"])
                } else {
                    assert!(
                        !self.template["Resources"][name].is_null(),
                        "{name} is neither a parameter nor a resource"
                    );
                    name.to_owned()
                }
            }
        }
    }
}

/// The (action, resource) pairs an IAM role's inline policies allow.
fn role_grants(role: &Value, resolver: &Resolver) -> Vec<(String, String)> {
    let as_list = |v: &Value| -> Vec<Value> {
        match v {
            Value::Array(items) => items.clone(),
            Value::Null => Vec::new(),
            other => vec![other.clone()],
        }
    };
    let mut grants = Vec::new();
    for policy in as_list(&role["Properties"]["Policies"]) {
        for statement in as_list(&policy["PolicyDocument"]["Statement"]) {
            assert_eq!(
                statement["Effect"], "Allow",
                "only Allow statements expected"
            );
            for action in as_list(&statement["Action"]) {
                for resource in as_list(&statement["Resource"]) {
                    grants.push((resolver.resolve(&action), resolver.resolve(&resource)));
                }
            }
        }
    }
    grants
}

/// The permission an `aws` command line of a boot script needs: (action, resource).
fn permission_for(call: &str) -> (String, String) {
    let words: Vec<&str> = call.split_whitespace().collect();
    match (words.first(), words.get(1)) {
        (Some(&"s3"), Some(&"cp")) => {
            let source = words
                .iter()
                .find_map(|w| w.strip_prefix("s3://"))
                .unwrap_or_else(|| panic!("aws s3 cp without an s3:// source: {call}"));
            ("s3:GetObject".to_owned(), format!("arn:aws:s3:::{source}"))
        }
        (Some(&"ssm"), Some(&"get-parameter")) => {
            let name = words
                .iter()
                .position(|w| *w == "--name")
                .and_then(|i| words.get(i + 1))
                .unwrap_or_else(|| panic!("aws ssm get-parameter without --name: {call}"));
            (
                "ssm:GetParameter".to_owned(),
                format!("arn:aws:ssm:{REGION}:{ACCOUNT}:parameter{name}"),
            )
        }
        _ => panic!("the test knows no IAM action for `aws {call}`"),
    }
}

/// IAM-style matching: `*` matches any run of characters.
fn matches_pattern(pattern: &str, text: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == text,
        Some((head, tail)) => {
            let Some(rest) = text.strip_prefix(head) else {
                return false;
            };
            (0..=rest.len())
                .filter(|i| rest.is_char_boundary(*i))
                .any(|i| matches_pattern(tail, &rest[i..]))
        }
    }
}

// ---------------------------------------------------------------------------------
// systemd formats
// ---------------------------------------------------------------------------------

/// A unit file (or drop-in): `[Section]` and `Key=Value` lines, in order.
struct Unit {
    name: String,
    text: String,
    entries: Vec<(String, String, String)>,
}

impl Unit {
    fn load(path: &Path) -> Unit {
        let text = read(path);
        let mut section = String::new();
        let mut entries = Vec::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                section = name.to_owned();
            } else if let Some((key, value)) = line.split_once('=') {
                entries.push((
                    section.clone(),
                    key.trim().to_owned(),
                    value.trim().to_owned(),
                ));
            }
        }
        Unit {
            name: path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            text,
            entries,
        }
    }

    /// The last value of `key` in `section` (later assignments win).
    fn get(&self, section: &str, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .rev()
            .find(|(s, k, _)| s == section && k == key)
            .map(|(_, _, v)| v.as_str())
    }

    /// The binary ExecStart runs (its file name).
    fn program(&self) -> String {
        let exec = self.get("Service", "ExecStart").expect("ExecStart");
        let path = exec.split_whitespace().next().unwrap_or_default();
        path.rsplit('/').next().unwrap_or_default().to_owned()
    }

    /// deploy/systemd/<name>.env for `EnvironmentFile=/etc/pushfleet/<name>.env`.
    fn example_env(&self) -> PathBuf {
        let env_file = self
            .get("Service", "EnvironmentFile")
            .expect("EnvironmentFile");
        let file = env_file.rsplit('/').next().unwrap_or_default();
        deploy_path(&format!("systemd/{file}"))
    }

    /// ExecStart's arguments after systemd's `$NAME` / `${NAME}` expansion with `env`.
    fn expand_exec_variables(&self, env: &BTreeMap<String, String>) -> String {
        let exec = self.get("Service", "ExecStart").expect("ExecStart");
        exec.split_whitespace()
            .skip(1)
            .map(|word| {
                let name = word
                    .strip_prefix("${")
                    .and_then(|w| w.strip_suffix('}'))
                    .or_else(|| word.strip_prefix('$'));
                match name {
                    Some(name) => env.get(name).cloned().unwrap_or_default(),
                    None => word.to_owned(),
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Parses an `EnvironmentFile=` the way systemd does (`parse_env_file` in systemd's
/// env-file.c): comments, `KEY=value`, single and double quotes, backslash escapes, a
/// backslash before a newline continuing the value on the next line.
fn parse_environment_file(text: &str) -> BTreeMap<String, String> {
    #[derive(Clone, Copy, PartialEq)]
    enum State {
        PreKey,
        Key,
        PreValue,
        Value,
        ValueEscape,
        SingleQuote,
        DoubleQuote,
        DoubleQuoteEscape,
        Comment,
        CommentEscape,
    }
    let mut variables = BTreeMap::new();
    let mut state = State::PreKey;
    let (mut key, mut value) = (String::new(), String::new());
    let mut finish = |key: &mut String, value: &mut String| {
        let name = key.trim().to_owned();
        if !name.is_empty() {
            variables.insert(name, value.trim_end().to_owned());
        }
        key.clear();
        value.clear();
    };
    for c in text.chars() {
        state = match (state, c) {
            (State::PreKey, '#' | ';') => State::Comment,
            (State::PreKey, c) if c.is_whitespace() => State::PreKey,
            (State::PreKey | State::Key, '=') => State::PreValue,
            (State::PreKey | State::Key, '\n') => {
                key.clear();
                State::PreKey
            }
            (State::PreKey | State::Key, c) => {
                key.push(c);
                State::Key
            }
            (State::PreValue | State::Value, '\n') => {
                finish(&mut key, &mut value);
                State::PreKey
            }
            (State::PreValue, '\'') => State::SingleQuote,
            (State::PreValue, '"') => State::DoubleQuote,
            (State::PreValue | State::Value, '\\') => State::ValueEscape,
            (State::PreValue, c) if c.is_whitespace() => State::PreValue,
            (State::PreValue | State::Value, c) => {
                value.push(c);
                State::Value
            }
            (State::ValueEscape, '\n') => State::Value,
            (State::ValueEscape, c) => {
                value.push(c);
                State::Value
            }
            (State::SingleQuote, '\'') => State::PreValue,
            (State::SingleQuote, c) => {
                value.push(c);
                State::SingleQuote
            }
            (State::DoubleQuote, '"') => State::PreValue,
            (State::DoubleQuote, '\\') => State::DoubleQuoteEscape,
            (State::DoubleQuote, c) => {
                value.push(c);
                State::DoubleQuote
            }
            (State::DoubleQuoteEscape, '\n') => State::DoubleQuote,
            (State::DoubleQuoteEscape, c) => {
                if !"\"\\`$".contains(c) {
                    value.push('\\');
                }
                value.push(c);
                State::DoubleQuote
            }
            (State::Comment, '\\') => State::CommentEscape,
            (State::Comment, '\n') => State::PreKey,
            (State::Comment | State::CommentEscape, _) => State::Comment,
        };
    }
    if matches!(
        state,
        State::PreValue
            | State::Value
            | State::ValueEscape
            | State::SingleQuote
            | State::DoubleQuote
            | State::DoubleQuoteEscape
    ) {
        finish(&mut key, &mut value);
    }
    variables
}

/// systemd-style durations as the deployment files write them: `45s`, `500ms`, `10m`,
/// `1h`, or bare seconds.
fn parse_duration(text: &str) -> Duration {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .unwrap_or_else(|_| panic!("not a duration: {text}"));
    match unit {
        "" | "s" | "sec" => Duration::from_secs(number),
        "ms" => Duration::from_millis(number),
        "m" | "min" => Duration::from_secs(number * 60),
        "h" => Duration::from_secs(number * 3600),
        other => panic!("unknown duration unit {other} in {text}"),
    }
}

// ---------------------------------------------------------------------------------
// The binaries' --help
// ---------------------------------------------------------------------------------

/// Flags (and their defaults) a program's `--help` lists.
#[derive(Clone)]
struct Help {
    program: String,
    flags: BTreeSet<String>,
    defaults: BTreeMap<String, String>,
}

impl Help {
    fn parse(program: &str, text: &str) -> Help {
        let mut flags = BTreeSet::new();
        let mut defaults = BTreeMap::new();
        let mut current: Option<String> = None;
        for line in text.lines() {
            let trimmed = line.trim_start();
            if trimmed.starts_with('-') {
                for word in trimmed.split([' ', ',']) {
                    if let Some(name) = word.strip_prefix("--") {
                        let name = name.split(['=', '<', '[']).next().unwrap_or_default();
                        if !name.is_empty() {
                            flags.insert(format!("--{name}"));
                            current = Some(format!("--{name}"));
                            break;
                        }
                    }
                }
            }
            if let (Some(flag), Some(start)) = (&current, line.find("[default: ")) {
                let rest = &line[start + "[default: ".len()..];
                if let Some(end) = rest.find(']') {
                    defaults.insert(flag.clone(), rest[..end].to_owned());
                }
            }
        }
        Help {
            program: program.to_owned(),
            flags,
            defaults,
        }
    }

    /// The value of `flag` in `args`, or its default.
    fn value(&self, args: &str, flag: &str) -> String {
        let words: Vec<&str> = args.split_whitespace().collect();
        for (index, word) in words.iter().enumerate() {
            if let Some(value) = word.strip_prefix(&format!("{flag}=")) {
                return value.to_owned();
            }
            if *word == flag {
                if let Some(value) = words.get(index + 1) {
                    return (*value).to_owned();
                }
            }
        }
        self.defaults.get(flag).cloned().unwrap_or_else(|| {
            panic!(
                "{flag} is neither given ({args}) nor defaulted by {}",
                self.program
            )
        })
    }
}

/// `--help` of each program, asked once.
#[derive(Default)]
struct Helps(BTreeMap<String, Help>);

impl Helps {
    fn get(&mut self, program: &str) -> Help {
        self.0
            .entry(program.to_owned())
            .or_insert_with(|| {
                let output = run(Command::new(binary(program)).arg("--help"));
                assert!(output.status.success(), "{program} --help failed");
                Help::parse(program, &String::from_utf8_lossy(&output.stdout))
            })
            .clone()
    }

    fn assert_flags_exist(&mut self, program: &str, args: &str, place: &str) {
        let help = self.get(program);
        let unknown: Vec<String> = args
            .split_whitespace()
            .filter(|w| w.starts_with("--"))
            .map(|w| w.split('=').next().unwrap_or(w).to_owned())
            .filter(|f| !help.flags.contains(f))
            .collect();
        assert!(
            unknown.is_empty(),
            "{place}: {program} has no {unknown:?} (see `{program} --help`)"
        );
    }

    /// Each `ETCD_FOO_BAR` is etcd's `--foo-bar`.
    fn assert_etcd_variables(&mut self, env: &BTreeMap<String, String>, place: &str) {
        let etcd = self.0.entry("etcd".to_owned()).or_insert_with(|| {
            let output = Command::new("etcd")
                .arg("--help")
                .output()
                .unwrap_or_else(|e| panic!("cannot run etcd --help ({e}): run scripts/setup.sh"));
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
            Help::parse("etcd", &text)
        });
        let variables: Vec<&String> = env.keys().filter(|k| k.starts_with("ETCD_")).collect();
        assert!(!variables.is_empty(), "{place}: no ETCD_ variables");
        for variable in variables {
            let flag = format!(
                "--{}",
                variable["ETCD_".len()..].to_lowercase().replace('_', "-")
            );
            assert!(
                etcd.flags.contains(&flag),
                "{place}: {variable} is no etcd flag ({flag} is not in `etcd --help`)"
            );
        }
    }
}

// ---------------------------------------------------------------------------------
// HAProxy
// ---------------------------------------------------------------------------------

/// The `${NAME}` variables haproxy.cfg expands (outside comments).
fn haproxy_variables(config: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in config.lines().filter(|l| !l.trim_start().starts_with('#')) {
        let mut rest = line;
        while let Some(start) = rest.find("${") {
            let Some(end) = rest[start..].find('}') else {
                break;
            };
            names.insert(rest[start + 2..start + end].to_owned());
            rest = &rest[start + end..];
        }
    }
    names
}

/// `haproxy -c` on the repository's haproxy.cfg with `env`, where HAProxy is installed.
fn haproxy_check(env: &BTreeMap<String, String>, place: &str) {
    let config = workspace_root().join("haproxy/haproxy.cfg");
    let mut command = Command::new("haproxy");
    command.arg("-c").arg("-f").arg(&config).envs(env);
    match command.output() {
        Ok(output) => assert!(
            output.status.success(),
            "haproxy -c with {place}'s values:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
        Err(e) => eprintln!("haproxy -c skipped ({e}): HAProxy is not installed"),
    }
}

// ---------------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------------

fn deploy_path(relative: &str) -> PathBuf {
    workspace_root().join("deploy").join(relative)
}

fn sysctl_settings() -> BTreeMap<String, String> {
    read(&deploy_path("systemd/sysctl.d/90-pushfleet-edge.conf"))
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with(';'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

fn number(value: &Value) -> Option<u64> {
    value
        .as_u64()
        .or_else(|| value.as_str().and_then(|s| s.parse().ok()))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}

/// A fresh directory under `target/test-logs/deploy`, removed when dropped unless the
/// test is failing (then it stays, to look at).
struct Scratch(PathBuf);

impl Scratch {
    fn new(what: &str) -> Scratch {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = log_dir().join("deploy").join(format!(
            "{what}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        Scratch(dir)
    }

    fn join(&self, path: &str) -> PathBuf {
        self.0.join(path)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn run(command: &mut Command) -> Output {
    command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"))
}

/// `systemd-analyze verify` succeeded and said nothing about `unit`. (It also loads
/// the units ours are wanted by and ordered after, and may complain about those: other
/// software's units on this machine are not ours to judge.)
fn assert_verified(output: &Output, unit: &str) {
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let about_unit: Vec<&str> = printed.lines().filter(|l| l.contains(unit)).collect();
    assert!(
        output.status.success() && about_unit.is_empty(),
        "systemd-analyze verify {unit} ({}):\n{}",
        output.status,
        about_unit.join("\n")
    );
}

/// Success, and nothing printed (systemd-analyze verify reports unknown keys and bad
/// values on stderr but still exits 0).
fn assert_quiet_success(output: &Output, what: &str) {
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success() && printed.trim().is_empty(),
        "{what} ({}):\n{printed}",
        output.status
    );
}
