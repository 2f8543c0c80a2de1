#!/bin/sh
# lb-autoscale: an example autoscaler loop over lbd's scaling signals.
#
# Every LB_INTERVAL seconds it reads lbd's /metrics and, for each service with a
# `scaling:` section, compares lb_service_desired_backends (lbd's target-tracking
# recommendation, with its scale-in cooldown already applied) with the healthy backends
# it has (lb_service_healthy_backends, summed over zones). When they differ it runs
#
#     $LB_SCALE_COMMAND SERVICE DESIRED
#
# which the operator points at their provider's CLI (set the desired capacity of the
# service's instance group, e.g. a wrapper around `aws autoscaling
# set-desired-capacity` or `gcloud compute instance-groups managed resize`). Without
# LB_SCALE_COMMAND it only prints what it would do. New backends register themselves
# and removed ones drain first (deploy/cloud-init/), so the group can scale in by
# terminating instances.
#
#   LB_METRICS_URL    lbd's metrics endpoint      default http://127.0.0.1:9464/metrics
#   LB_SCALE_COMMAND  the command to run          default: none (print only)
#   LB_INTERVAL       seconds between looks       default 60
#   --once            look once and exit
set -eu

LB_METRICS_URL=${LB_METRICS_URL:-http://127.0.0.1:9464/metrics}
LB_INTERVAL=${LB_INTERVAL:-60}

look() {
    metrics=$(curl -fsS --max-time 10 "$LB_METRICS_URL") || {
        echo "lb-autoscale: cannot read $LB_METRICS_URL" >&2
        return 1
    }
    # "SERVICE DESIRED HEALTHY" for each service with a desired count.
    echo "$metrics" | awk '
        /^lb_service_desired_backends\{/ || /^lb_service_healthy_backends\{/ {
            match($0, /service="[^"]*"/)
            service = substr($0, RSTART + 9, RLENGTH - 10)
            if ($0 ~ /^lb_service_desired/) desired[service] = $NF
            else healthy[service] += $NF
        }
        END { for (s in desired) printf "%s %d %d\n", s, desired[s], healthy[s] }' |
        sort | while read -r service desired healthy; do
            if [ "$desired" -eq "$healthy" ]; then
                echo "$service: desired $desired, healthy $healthy: nothing to do"
            elif [ -z "${LB_SCALE_COMMAND:-}" ]; then
                echo "$service: desired $desired, healthy $healthy: would scale to $desired (set LB_SCALE_COMMAND to act)"
            else
                echo "$service: desired $desired, healthy $healthy: running $LB_SCALE_COMMAND $service $desired"
                # Word-split on purpose: the command may carry its own arguments.
                # shellcheck disable=SC2086
                $LB_SCALE_COMMAND "$service" "$desired" ||
                    echo "lb-autoscale: $LB_SCALE_COMMAND $service $desired failed" >&2
            fi
        done
}

if [ "${1:-}" = --once ]; then
    look
    exit
fi
while :; do
    look || true
    sleep "$LB_INTERVAL"
done
