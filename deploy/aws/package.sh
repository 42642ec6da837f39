#!/usr/bin/env bash
# Builds the release tarball that the CloudFormation stack's instances install
# (deploy/aws/pushfleet.yaml), and optionally uploads it to S3.
#
#   deploy/aws/package.sh                          # -> target/pushfleet-linux-amd64.tar.gz
#   deploy/aws/package.sh s3://my-bucket/pushfleet/pushfleet-1.2.0.tar.gz
#
# Build on Debian 12 (or older) for amd64: the binaries link glibc and libzmq
# dynamically, and the instances run Debian 12. Layout (cloud-init relies on it):
#
#   bin/       pushfleet-server pushfleet-relay pushfleet-publish herald
#   systemd/   deploy/systemd as is (units, example env files, the HAProxy drop-in,
#              sysctl.d/90-pushfleet-edge.conf)
#   haproxy/   haproxy.cfg
#   VERSION    git describe of the build
set -euo pipefail
cd "$(dirname "$0")/../.."

destination="${1:-}"
out=target/pushfleet-linux-amd64.tar.gz
bins=(pushfleet-server pushfleet-relay pushfleet-publish herald)

cargo build --release --locked --bins
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
install -d "$stage/bin" "$stage/haproxy"
for bin in "${bins[@]}"; do
  install -m 0755 "target/release/$bin" "$stage/bin/"
done
cp -R deploy/systemd "$stage/systemd"
install -m 0644 haproxy/haproxy.cfg "$stage/haproxy/"
git describe --always --dirty > "$stage/VERSION" 2>/dev/null || echo unknown > "$stage/VERSION"
tar -czf "$out" -C "$stage" .
echo "package: $out ($(cat "$stage/VERSION"))"

if [ -n "$destination" ]; then
  aws s3 cp "$out" "$destination"
  echo "package: uploaded to $destination"
fi
