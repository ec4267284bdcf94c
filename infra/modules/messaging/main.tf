# The events topic and the queues app.py consumes, each with its DLQ; the ops
# (alerts) topic. A queue's visibility timeout is 6x its function's timeout, as
# AWS recommends for SQS event sources.

variable "prefix" { type = string }
variable "topic_queues" {
  description = "Queues subscribed to the events topic (raw delivery), each with the event types it receives (null: every type)"
  type        = map(list(string))
}
variable "other_queues" {
  description = "Queues fed otherwise, not subscribed (rebill: the scheduler; webhook-deliveries: the app)"
  type        = list(string)
}
variable "function_timeout_s" { type = number }
variable "max_receive_count" { type = number }

locals {
  queues = concat(keys(var.topic_queues), var.other_queues)
}

module "key" {
  source      = "../kms_key"
  description = "${var.prefix} SNS and SQS encryption"
  # SNS must encrypt what it delivers to the encrypted queues, and CloudWatch
  # alarms must publish to the encrypted ops topic.
  service_principals = ["sns.amazonaws.com", "cloudwatch.amazonaws.com"]
}

resource "aws_sns_topic" "events" {
  name              = "${var.prefix}-events"
  kms_master_key_id = module.key.id
}

resource "aws_sns_topic" "ops" {
  name              = "${var.prefix}-ops"
  kms_master_key_id = module.key.id
}

resource "aws_sqs_queue" "dlq" {
  for_each                  = toset(local.queues)
  name                      = "${each.key}-dlq"
  message_retention_seconds = 1209600
  kms_master_key_id         = module.key.id
}

resource "aws_sqs_queue" "queue" {
  for_each                   = toset(local.queues)
  name                       = each.key
  visibility_timeout_seconds = 6 * var.function_timeout_s
  kms_master_key_id          = module.key.id
  redrive_policy = jsonencode({
    deadLetterTargetArn = aws_sqs_queue.dlq[each.key].arn
    maxReceiveCount     = var.max_receive_count
  })
}

# Every function's dead-letter queue for asynchronous invocations (the schedules, the ops topic) that
# failed all of Lambda's retries: the message is the event that failed; the monitoring module alarms on it.
resource "aws_sqs_queue" "failed_invocations" {
  name                      = "${var.prefix}-failed-invocations"
  message_retention_seconds = 1209600
  kms_master_key_id         = module.key.id
}

data "aws_iam_policy_document" "from_topic" {
  for_each = var.topic_queues
  statement {
    actions   = ["sqs:SendMessage"]
    resources = [aws_sqs_queue.queue[each.key].arn]
    principals {
      type        = "Service"
      identifiers = ["sns.amazonaws.com"]
    }
    condition {
      test     = "ArnEquals"
      variable = "aws:SourceArn"
      values   = [aws_sns_topic.events.arn]
    }
  }
}

resource "aws_sqs_queue_policy" "from_topic" {
  for_each  = var.topic_queues
  queue_url = aws_sqs_queue.queue[each.key].id
  policy    = data.aws_iam_policy_document.from_topic[each.key].json
}

resource "aws_sns_topic_subscription" "queue" {
  for_each             = var.topic_queues
  topic_arn            = aws_sns_topic.events.arn
  protocol             = "sqs"
  endpoint             = aws_sqs_queue.queue[each.key].arn
  raw_message_delivery = true
  # Only the types the queue's handlers take, matched on the eventType message attribute the
  # outbox publishes (chalicelib/outbox.py); a queue that takes every type has no policy.
  filter_policy       = each.value == null ? null : jsonencode({ eventType = each.value })
  filter_policy_scope = each.value == null ? null : "MessageAttributes"
}

output "events_topic_arn" { value = aws_sns_topic.events.arn }
output "ops_topic_arn" { value = aws_sns_topic.ops.arn }
output "kms_key_arn" { value = module.key.arn }
output "queue_arns" { value = { for name, q in aws_sqs_queue.queue : name => q.arn } }
output "dlq_names" { value = { for name, q in aws_sqs_queue.dlq : name => q.name } }
output "failed_invocations_queue_arn" { value = aws_sqs_queue.failed_invocations.arn }
output "failed_invocations_queue_name" { value = aws_sqs_queue.failed_invocations.name }
