# Alarms to the ops topic and one dashboard: API, Lambda, business KPIs (the
# app's EMF metrics), queues and DLQs, database.

variable "name" { type = string }
variable "alarm_topic_arn" { type = string }
variable "function_names" { type = list(string) }
variable "queue_names" { type = list(string) }
variable "dlq_names" { type = list(string) }
variable "api_name" { type = string }
variable "db_cluster_id" { type = string }
variable "error_rate_percent" { type = number }
variable "db_max_connections" { type = number }

data "aws_region" "current" {}

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
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  evaluation_periods  = 1
  namespace           = "AWS/ApiGateway"
  metric_name         = "5XXError"
  period              = 300
  statistic           = "Sum"
  dimensions          = { ApiName = var.api_name }
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
  namespace           = "BillingPlatform"
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
  widgets = [
    { title = "API", metrics = [for m in ["Count", "4XXError", "5XXError"] : ["AWS/ApiGateway", m, "ApiName", var.api_name]] },
    { title = "API latency p99", metrics = [["AWS/ApiGateway", "Latency", "ApiName", var.api_name, { stat = "p99" }]] },
    { title = "Lambda errors", metrics = [for f in var.function_names : ["AWS/Lambda", "Errors", "FunctionName", f]] },
    { title = "Lambda duration p95", metrics = [for f in var.function_names : ["AWS/Lambda", "Duration", "FunctionName", f, { stat = "p95" }]] },
    # The app emits KPIs per TenantId/PlanId (and Currency): SEARCH sums across them.
    { title = "Business KPIs", metrics = [for i, k in local.kpis : [{ expression = "SUM(SEARCH('BillingPlatform MetricName=\"${k}\"', 'Sum', 300))", label = k, id = "k${i}" }]] },
    { title = "Queues", metrics = [for q in var.queue_names : ["AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName", q]] },
    { title = "DLQs", metrics = [for q in var.dlq_names : ["AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName", q]] },
    { title = "Database", metrics = [for m in ["CPUUtilization", "DatabaseConnections", "ServerlessDatabaseCapacity"] : ["AWS/RDS", m, "DBClusterIdentifier", var.db_cluster_id]] },
  ]
}

resource "aws_cloudwatch_dashboard" "this" {
  dashboard_name = var.name
  dashboard_body = jsonencode({
    widgets = [
      for i, w in local.widgets : {
        type       = "metric"
        x          = (i % 2) * 12
        y          = floor(i / 2) * 6
        width      = 12
        height     = 6
        properties = { title = w.title, region = local.region, metrics = w.metrics, period = 300, stat = "Sum", view = "timeSeries" }
      }
    ]
  })
}
