# Alarms to the ops topic, which mails and calls the people on duty, and one
# dashboard: API, Lambda, business KPIs (the app's EMF metrics), queues and DLQs,
# database, and the functions' latest error log lines.

variable "name" { type = string }
variable "metrics_namespace" {
  description = "The app's EMF namespace for this stack (METRICS_NAMESPACE)"
  type        = string
  default     = "BillingPlatform"
}
variable "alarm_topic_arn" { type = string }
variable "function_names" { type = list(string) }
variable "queue_names" { type = list(string) }
variable "dlq_names" { type = list(string) }
variable "api_name" { type = string }
variable "db_cluster_id" { type = string }
variable "error_rate_percent" { type = number }
variable "db_max_connections" { type = number }
variable "alarm_emails" {
  description = "Addresses the ops topic mails every alarm to (each confirms its subscription from the mail AWS sends)"
  type        = list(string)
  default     = []
  validation {
    condition     = alltrue([for e in var.alarm_emails : can(regex("^[^@\\s]+@[^@\\s]+\\.[^@\\s]+$", e))])
    error_message = "Each alarm_emails entry is an email address."
  }
}
variable "alarm_https_endpoints" {
  description = "HTTPS URLs the ops topic posts every alarm to (a chat webhook, an incident tool); each must confirm the subscription"
  type        = list(string)
  default     = []
  validation {
    condition     = alltrue([for u in var.alarm_https_endpoints : startswith(u, "https://")])
    error_message = "Each alarm_https_endpoints entry is an https:// URL (alarms say what is wrong: never in clear)."
  }
}
variable "failed_invocations_queue_name" {
  description = "The SQS queue every function has as dead-letter queue for asynchronous invocations (the schedules' runs)"
  type        = string
}
variable "scheduled_function_names" {
  description = "Functions run by a schedule (the daily rebill among them): any error alarms within the period"
  type        = list(string)
}
variable "log_group_names" {
  description = "The functions' log groups (/aws/lambda/NAME): the dashboard lists their latest ERROR lines"
  type        = list(string)
  validation {
    condition     = length(var.log_group_names) <= 50
    error_message = "A Logs Insights query reads 50 log groups at most."
  }
}

data "aws_region" "current" {}

# Email subscriptions stay pending until the person confirms from AWS's mail, and
# Terraform cannot delete a pending one (it is dropped from state and expires after
# three days).
resource "aws_sns_topic_subscription" "email" {
  for_each  = toset(var.alarm_emails)
  topic_arn = var.alarm_topic_arn
  protocol  = "email"
  endpoint  = each.value
}

resource "aws_sns_topic_subscription" "https" {
  for_each  = toset(var.alarm_https_endpoints)
  topic_arn = var.alarm_topic_arn
  protocol  = "https"
  endpoint  = each.value
  # The endpoint confirms by visiting the SubscribeURL SNS posts to it; Terraform does not wait.
  endpoint_auto_confirms = false
}

resource "aws_cloudwatch_metric_alarm" "lambda_error_rate" {
  for_each            = toset(var.function_names)
  alarm_name          = "${each.key}-error-rate"
  alarm_description   = "More than ${var.error_rate_percent}% of invocations failed in three 5-minute periods"
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.error_rate_percent
  evaluation_periods  = 3
  treat_missing_data  = "notBreaching"
  alarm_actions       = [var.alarm_topic_arn]
  ok_actions          = [var.alarm_topic_arn]
  metric_query {
    id          = "rate"
    expression  = "IF(invocations > 0, 100 * errors / invocations, 0)"
    label       = "error rate %"
    return_data = true
  }
  metric_query {
    id = "errors"
    metric {
      namespace   = "AWS/Lambda"
      metric_name = "Errors"
      period      = 300
      stat        = "Sum"
      dimensions  = { FunctionName = each.key }
    }
  }
  metric_query {
    id = "invocations"
    metric {
      namespace   = "AWS/Lambda"
      metric_name = "Invocations"
      period      = 300
      stat        = "Sum"
      dimensions  = { FunctionName = each.key }
    }
  }
}

resource "aws_cloudwatch_metric_alarm" "lambda_throttles" {
  for_each            = toset(var.function_names)
  alarm_name          = "${each.key}-throttles"
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  evaluation_periods  = 1
  namespace           = "AWS/Lambda"
  metric_name         = "Throttles"
  period              = 300
  statistic           = "Sum"
  dimensions          = { FunctionName = each.key }
  treat_missing_data  = "notBreaching"
  alarm_actions       = [var.alarm_topic_arn]
}

resource "aws_cloudwatch_metric_alarm" "dlq_not_empty" {
  for_each            = toset(var.dlq_names)
  alarm_name          = "${each.key}-not-empty"
  alarm_description   = "Messages were dead-lettered: inspect, fix, then python -m chalicelib.dlq --queue <source>"
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  evaluation_periods  = 1
  namespace           = "AWS/SQS"
  metric_name         = "ApproximateNumberOfMessagesVisible"
  period              = 300
  statistic           = "Maximum"
  dimensions          = { QueueName = each.key }
  treat_missing_data  = "notBreaching"
  alarm_actions       = [var.alarm_topic_arn]
}

resource "aws_cloudwatch_metric_alarm" "api_5xx" {
  alarm_name          = "${var.api_name}-5xx"
  alarm_description   = "The API answered more than 10 server errors in each of three 5-minute periods: see the dashboard's error log"
  comparison_operator = "GreaterThanThreshold"
  threshold           = 10
  evaluation_periods  = 3
  datapoints_to_alarm = 3
  namespace           = "AWS/ApiGateway"
  metric_name         = "5XXError"
  period              = 300
  statistic           = "Sum"
  dimensions          = { ApiName = var.api_name }
  treat_missing_data  = "notBreaching"
  alarm_actions       = [var.alarm_topic_arn]
}

# A scheduled run whose asynchronous invocation failed every retry lands in this
# queue: the daily rebill must not be missed for more than the hour.
resource "aws_cloudwatch_metric_alarm" "failed_invocations" {
  alarm_name = "${var.failed_invocations_queue_name}-not-empty"
  alarm_description = join(" ", [
    "A scheduled run failed every retry: its event is in ${var.failed_invocations_queue_name} (Lambda's dead-letter queue for async invocations).",
    "Each message body is the original EventBridge event: \"resources\" names the schedule rule (which function), \"time\" the run; the ErrorMessage attribute says why.",
    "Fix the cause (dashboard: Errors), rerun that function with the body as payload, e.g. aws lambda invoke --function-name <prefix>-rebill_schedule --invocation-type Event --payload fileb://body.json out.json",
    "(rebill_schedule is idempotent: accounts already billed for the period are not billed again), then delete the message.",
  ])
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  evaluation_periods  = 1
  namespace           = "AWS/SQS"
  metric_name         = "ApproximateNumberOfMessagesVisible"
  period              = 300
  statistic           = "Maximum"
  dimensions          = { QueueName = var.failed_invocations_queue_name }
  treat_missing_data  = "notBreaching"
  alarm_actions       = [var.alarm_topic_arn]
}

# Heard at the first failed attempt, before Lambda's retries are spent.
resource "aws_cloudwatch_metric_alarm" "scheduled_errors" {
  for_each            = toset(var.scheduled_function_names)
  alarm_name          = "${each.key}-errors"
  alarm_description   = "A scheduled run of ${each.key} failed; Lambda retries it. If the retries fail too it lands in ${var.failed_invocations_queue_name} (its alarm says how to rerun). See the dashboard's error log."
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  evaluation_periods  = 1
  namespace           = "AWS/Lambda"
  metric_name         = "Errors"
  period              = 300
  statistic           = "Sum"
  dimensions          = { FunctionName = each.key }
  treat_missing_data  = "notBreaching"
  alarm_actions       = [var.alarm_topic_arn]
}

resource "aws_cloudwatch_metric_alarm" "payments" {
  # The app's own word that a payment needs a person (chalicelib/billing/gateways.py, collection.py);
  # the log line next to each names the tenant and the attempt.
  for_each = {
    gateway-not-connected    = "A tenant with no payment gateway was due a charge: it stays pending until the tenant connects one"
    gateway-refused          = "Stripe refused a charge or refund as invalid (not a decline): the attempt stays pending; fix and it is retried under its key"
    payment-after-resolution = "Stripe took money for an attempt we had declined or cancelled: it was posted as the account's credit; check the account"
  }
  alarm_name          = "${var.name}-${each.key}"
  alarm_description   = each.value
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  evaluation_periods  = 1
  namespace           = var.metrics_namespace
  metric_name         = replace(each.key, "-", "_")
  period              = 300
  statistic           = "Sum"
  treat_missing_data  = "notBreaching"
  alarm_actions       = [var.alarm_topic_arn]
}

resource "aws_cloudwatch_metric_alarm" "db" {
  for_each = {
    cpu         = { metric = "CPUUtilization", op = "GreaterThanThreshold", threshold = 80, stat = "Average" }
    connections = { metric = "DatabaseConnections", op = "GreaterThanThreshold", threshold = var.db_max_connections, stat = "Maximum" }
    storage     = { metric = "FreeLocalStorage", op = "LessThanThreshold", threshold = 2147483648, stat = "Minimum" }
  }
  alarm_name          = "${var.db_cluster_id}-${each.key}"
  comparison_operator = each.value.op
  threshold           = each.value.threshold
  evaluation_periods  = 3
  namespace           = "AWS/RDS"
  metric_name         = each.value.metric
  period              = 300
  statistic           = each.value.stat
  dimensions          = { DBClusterIdentifier = var.db_cluster_id }
  treat_missing_data  = "notBreaching"
  alarm_actions       = [var.alarm_topic_arn]
}

locals {
  region = data.aws_region.current.name
  kpis   = ["subscription_count", "subscription_revenue", "invoice_amount", "rebill_accounts", "rebill_failures", "payment_declines", "payment_action_required"]
  # The app's EMF metrics (chalicelib/observability.py) have no tenant or plan dimension (those are
  # properties of the log documents, for Logs Insights): each is one total series per stack, and
  # subscription_revenue one more per Currency.
  revenue_by_currency = "SEARCH('{${var.metrics_namespace},Currency} MetricName=\"subscription_revenue\"', 'Sum', 300)"
  functions           = { for i, f in var.function_names : f => i }
  widgets = [
    { title = "API", metrics = [for m in ["Count", "4XXError", "5XXError"] : ["AWS/ApiGateway", m, "ApiName", var.api_name]] },
    { title = "API latency p99", metrics = [["AWS/ApiGateway", "Latency", "ApiName", var.api_name, { stat = "p99" }]] },
    { title = "Lambda errors", metrics = [for f in var.function_names : ["AWS/Lambda", "Errors", "FunctionName", f]] },
    { title = "Lambda duration p95", metrics = [for f in var.function_names : ["AWS/Lambda", "Duration", "FunctionName", f, { stat = "p95" }]] },
    { title = "Business KPIs", metrics = [for i, k in local.kpis : [var.metrics_namespace, k, { label = k, id = "k${i}" }]] },
    { title = "Queues", metrics = [for q in var.queue_names : ["AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName", q]] },
    { title = "DLQs", metrics = [for q in var.dlq_names : ["AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName", q]] },
    { title = "Database", metrics = [for m in ["CPUUtilization", "DatabaseConnections", "ServerlessDatabaseCapacity"] : ["AWS/RDS", m, "DBClusterIdentifier", var.db_cluster_id]] },
    {
      # chalicelib/billing/invoicing.py: ms per invoice written, every value of a batch kept (percentiles hold).
      title = "Invoice generation time (ms per invoice)"
      metrics = [
        [var.metrics_namespace, "invoice_generation_time", { stat = "p95", label = "p95", id = "p95" }],
        [var.metrics_namespace, "invoice_generation_time", { stat = "Average", label = "average", id = "avg" }],
      ]
    },
    { title = "Subscription revenue by currency", metrics = [[{ expression = local.revenue_by_currency, id = "revenue" }]] },
    { title = "Lambda concurrency (max)", metrics = [for f in var.function_names : ["AWS/Lambda", "ConcurrentExecutions", "FunctionName", f, { stat = "Maximum" }]] },
    {
      title = "API error %"
      metrics = [
        ["AWS/ApiGateway", "Count", "ApiName", var.api_name, { id = "requests", visible = false }],
        ["AWS/ApiGateway", "5XXError", "ApiName", var.api_name, { id = "e5xx", visible = false }],
        ["AWS/ApiGateway", "4XXError", "ApiName", var.api_name, { id = "e4xx", visible = false }],
        [{ expression = "IF(requests > 0, 100 * e5xx / requests, 0)", label = "5XX %", id = "pct5xx" }],
        [{ expression = "IF(requests > 0, 100 * e4xx / requests, 0)", label = "4XX %", id = "pct4xx" }],
      ]
    },
    {
      title = "Lambda error %"
      metrics = concat(
        [for f, i in local.functions : ["AWS/Lambda", "Errors", "FunctionName", f, { id = "e${i}", visible = false }]],
        [for f, i in local.functions : ["AWS/Lambda", "Invocations", "FunctionName", f, { id = "n${i}", visible = false }]],
        [for f, i in local.functions : [{ expression = "IF(n${i} > 0, 100 * e${i} / n${i}, 0)", label = f, id = "pct${i}" }]],
        length(local.functions) == 0 ? [] : [[{
          expression = "IF(SUM([${join(", ", [for i in values(local.functions) : "n${i}"])}]) > 0, 100 * SUM([${join(", ", [for i in values(local.functions) : "e${i}"])}]) / SUM([${join(", ", [for i in values(local.functions) : "n${i}"])}]), 0)"
          label      = "all functions"
          id         = "pcttotal"
        }]],
      )
    },
  ]
  metric_widgets = [
    for i, w in local.widgets : {
      type       = "metric"
      x          = (i % 2) * 12
      y          = floor(i / 2) * 6
      width      = 12
      height     = 6
      properties = { title = w.title, region = local.region, metrics = w.metrics, period = 300, stat = "Sum", view = "timeSeries" }
    }
  ]
  # The app logs JSON lines (chalicelib/observability.py): timestamp, level, message, logger, function.
  error_query = "fields @timestamp, function, message | filter level = \"ERROR\" | sort @timestamp desc | limit 50"
  log_widgets = length(var.log_group_names) == 0 ? [] : [
    {
      type   = "log"
      x      = 0
      y      = ceil(length(local.widgets) / 2) * 6
      width  = 24
      height = 8
      properties = {
        title  = "Errors: the latest 50 ERROR lines of every function"
        region = local.region
        view   = "table"
        query  = "${join(" | ", [for g in var.log_group_names : "SOURCE '${g}'"])} | ${local.error_query}"
      }
    }
  ]
}

resource "aws_cloudwatch_dashboard" "this" {
  dashboard_name = var.name
  dashboard_body = jsonencode({ widgets = concat(local.metric_widgets, local.log_widgets) })
}
