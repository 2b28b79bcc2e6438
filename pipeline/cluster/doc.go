// Package cluster holds what the instances of one iotwatch deployment share
// through NATS JetStream (KV and the Object Store), so that a safety rule holds for the cluster and
// not per process, with no coordination service of iotwatch's own:
//
//   - KVBudget, a decide.Budget in the bucket schemas.KVBudgets: the cap on
//     new blocks per event-time minute (decide.Config.MaxBlocksPerMinute)
//     counted once for every instance, with JetStream's compare-and-set
//     (Create, then Update with the last revision; a conflict is retried).
//     Any other per-minute cap is one more BudgetConfig.Name in the same
//     bucket. When the bucket cannot be reached within a timeout, an
//     instance grants at most its local share (Max / Instances) of each
//     minute, so that N instances cut off together stay within the cap, and
//     a take never waits longer than BudgetConfig.Timeout.
//   - Allowlist, a watcher of the bucket schemas.KVAllowlist that keeps the
//     engines' decide.AllowlistRef equal to the instance's own --allowlist
//     merged with the bucket's entries, applying a change within a second
//     or so, without a restart.
//   - ClassSync, the class statistics merged across scorers: every
//     interval each instance puts its own contribution
//     (detectors.ClassModel.AppendContribution, S2-compressed) as its object
//     in the Object Store bucket schemas.BucketClassStats and merges the
//     others' latest objects into its model's read-only overlay, so that a
//     class sees all its devices; an object older than the expiry is no
//     longer merged. With watermarks (run --class-lag, the default) each
//     object also carries the event time its instance learned its
//     partitions up to, and the ClassSync is the pipeline's ClassGate:
//     an instance judges an event only once the merged view covers its
//     event time minus the lag, holding (bounded) until the others
//     publish, and publishes itself at a step of event time as well as
//     every interval, so that a replay's view is not minutes behind.
//
// The decision engine stays pure: replay, evaluation and golden scenarios
// use decide.LocalBudget and a fixed allowlist, with no NATS.
package cluster
