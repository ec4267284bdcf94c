# Wiring between chalice's generated resources (chalice.tf.json, in the same
# build directory) and the modules: runtime permissions, the API stage with X-Ray
# and access logs, per-route throttling, WAF, alarms and the dashboard.
# Only valid next to chalice.tf.json: `python -m devtools.package` puts it there.

# (data.aws_caller_identity/aws_partition/aws_region.current are declared in main.tf.)

# Roles: one per function, each granted only what that function calls: its row of
# infra/function_access.json (the same table devtools/stage_config.py writes policies from for
# chalice deploy), with local.function_resource_arns (main.tf) naming the resources. Every role also
# gets its own log group, the network interfaces of a function in the VPC, X-Ray, and the
# failed-invocations queue (its dead-letter queue); an SQS consumer gets its own queue.
data "aws_iam_policy_document" "lambda_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["lambda.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "function" {
  for_each           = toset(local.packaged_functions)
  name               = "${local.name}-${replace(each.key, "_", "-")}"
  assume_role_policy = data.aws_iam_policy_document.lambda_assume.json
  lifecycle {
    precondition {
      condition     = contains(keys(local.function_access.functions), each.key)
      error_message = "Function ${each.key} has no row in infra/function_access.json: say what it calls."
    }
  }
}

data "aws_iam_policy_document" "function" {
  for_each = toset(local.packaged_functions)
  statement {
    sid       = "OwnLogGroup"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.function[each.key].arn}:*"]
  }
  statement {
    # A function in the VPC: Lambda creates and deletes its network interfaces as the function's role.
    # Describe* cannot be narrowed to a resource (Lambda's VPC policy has both); the rest are held to this VPC's subnets and group.
    sid       = "DescribeNetworkInterfaces"
    actions   = ["ec2:DescribeNetworkInterfaces", "ec2:DescribeSubnets"]
    resources = ["*"]
  }
  statement {
    sid     = "OwnNetworkInterfaces"
    actions = ["ec2:CreateNetworkInterface", "ec2:DeleteNetworkInterface", "ec2:AssignPrivateIpAddresses", "ec2:UnassignPrivateIpAddresses"]
    resources = concat(
      ["arn:${local.partition}:ec2:${local.region}:${local.account}:network-interface/*"],
      [for id in module.network.private_subnet_ids : "arn:${local.partition}:ec2:${local.region}:${local.account}:subnet/${id}"],
      ["arn:${local.partition}:ec2:${local.region}:${local.account}:security-group/${module.network.lambda_security_group_id}"],
    )
  }
  statement {
    # Asynchronous invocations that failed every retry (dead_letter_config): the schedules, the ops topic.
    sid       = "FailedInvocations"
    actions   = ["sqs:SendMessage"]
    resources = [module.messaging.failed_invocations_queue_arn]
  }
  statement {
    sid       = "FailedInvocationsKey"
    actions   = ["kms:GenerateDataKey", "kms:Decrypt"]
    resources = [module.messaging.kms_key_arn]
  }
  dynamic "statement" {
    # An SQS consumer's own queue, as its event-source mapping polls it.
    for_each = contains(keys(local.function_queues), each.key) ? [module.messaging.queue_arns[local.function_queues[each.key]]] : []
    content {
      sid       = "OwnQueue"
      actions   = ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes", "sqs:ChangeMessageVisibility"]
      resources = [statement.value]
    }
  }
  dynamic "statement" {
    for_each = flatten([
      for need in lookup(local.function_access.functions, each.key, []) : [
        for i, grant in local.function_access.grants[need] : { sid = "${replace(title(replace(need, "_", " ")), " ", "")}${i}", grant = grant }
      ]
    ])
    content {
      sid       = statement.value.sid
      actions   = statement.value.grant.actions
      resources = [for name in statement.value.grant.resources : local.function_resource_arns[name]]
    }
  }
}

resource "aws_iam_role_policy" "function" {
  for_each = toset(local.packaged_functions)
  name     = "${local.name}-${replace(each.key, "_", "-")}"
  role     = aws_iam_role.function[each.key].id
  policy   = data.aws_iam_policy_document.function[each.key].json
}

resource "aws_iam_role_policy_attachment" "xray" {
  for_each   = toset(local.packaged_functions)
  role       = aws_iam_role.function[each.key].name
  policy_arn = "arn:${local.partition}:iam::aws:policy/AWSXRayDaemonWriteAccess"
}

# Lambda's log groups, managed: they expire after the stage's retention, and a function cannot make
# one itself (its role has no logs:CreateLogGroup).
resource "aws_cloudwatch_log_group" "function" {
  #checkov:skip=CKV_AWS_158:CloudWatch Logs encrypts at rest with AWS-managed keys; a CMK for logs is future work
  #checkov:skip=CKV_AWS_338:retention is the stage's choice (var.log_retention_days): 365 days by default, dev keeps 30
  for_each          = toset(local.packaged_functions)
  name              = "/aws/lambda/${local.prefix}-${each.key}"
  retention_in_days = var.log_retention_days
}

# Each SQS mapping polls with at most its function's reservation (main.tf): more pollers would be throttled.
locals {
  sqs_max_concurrency = { for function, queue in local.function_queues : function => local.reserved_concurrency[function] }
}

resource "aws_cloudwatch_log_group" "api_access" {
  #checkov:skip=CKV_AWS_158:CloudWatch Logs encrypts at rest with AWS-managed keys; a CMK for logs is future work
  #checkov:skip=CKV_AWS_338:retention is the stage's choice (var.log_retention_days): 365 days by default, dev keeps 30
  name              = "/aws/apigateway/${local.name}-access"
  retention_in_days = var.log_retention_days
}

resource "aws_cloudwatch_log_group" "api_execution" {
  #checkov:skip=CKV_AWS_158:CloudWatch Logs encrypts at rest with AWS-managed keys; a CMK for logs is future work
  #checkov:skip=CKV_AWS_338:retention is the stage's choice (var.log_retention_days): 365 days by default, dev keeps 30
  # API Gateway's execution logs (logging_level ERROR below) go to a group it would otherwise make
  # itself, unmanaged and kept forever.
  name              = "API-Gateway-Execution-Logs_${aws_api_gateway_rest_api.rest_api.id}/${local.api_stage_name}"
  retention_in_days = var.log_retention_days
}

resource "aws_api_gateway_stage" "api" {
  #checkov:skip=CKV_AWS_120:responses are per tenant and per token; caching them would serve one tenant's data to another
  #checkov:skip=CKV2_AWS_51:tenants authenticate with Cognito JWTs; client certificates do not fit public SaaS clients
  #checkov:skip=CKV2_AWS_29:the WAF module associates its web ACL with this stage (module.waf)
  #checkov:skip=CKV2_AWS_77:the WAF module's ACL includes KnownBadInputs (Log4JRCE); checkov cannot follow the module
  rest_api_id          = aws_api_gateway_rest_api.rest_api.id
  deployment_id        = aws_api_gateway_deployment.rest_api.id
  stage_name           = local.api_stage_name
  xray_tracing_enabled = true
  depends_on           = [aws_cloudwatch_log_group.api_execution]
  # Its access logs need the account's API Gateway logging role: infra/account, applied once per
  # account and region (an account-wide setting no stage may own: destroying one would break the others).
  access_log_settings {
    destination_arn = aws_cloudwatch_log_group.api_access.arn
    format = jsonencode({
      requestId = "$context.requestId", ip = "$context.identity.sourceIp", method = "$context.httpMethod",
      path      = "$context.resourcePath", status = "$context.status", latencyMs = "$context.responseLatency",
      tenant    = "$context.authorizer.claims.custom:tenant_id", waf = "$context.waf.status"
    })
  }
}

resource "aws_api_gateway_method_settings" "throttle" {
  #checkov:skip=CKV_AWS_225:responses are per tenant and per token and must never be cached
  for_each    = var.api_throttle
  rest_api_id = aws_api_gateway_rest_api.rest_api.id
  stage_name  = aws_api_gateway_stage.api.stage_name
  method_path = each.key
  settings {
    throttling_rate_limit  = each.value.rate
    throttling_burst_limit = each.value.burst
    metrics_enabled        = true
    logging_level          = "ERROR"
  }
}

module "waf" {
  source       = "./modules/waf"
  name         = local.name
  stage_arn    = aws_api_gateway_stage.api.arn
  block        = var.waf_block
  api_throttle = var.api_throttle
  stage_name   = local.api_stage_name
}

module "monitoring" {
  source             = "./modules/monitoring"
  name               = local.name
  alarm_topic_arn    = module.messaging.ops_topic_arn
  function_names     = local.billing_function_names
  queue_names        = local.queue_names
  dlq_names          = values(module.messaging.dlq_names)
  api_name           = aws_api_gateway_rest_api.rest_api.name
  db_cluster_id      = module.database.cluster_id
  error_rate_percent = var.error_rate_alarm_percent
  # 90% of what the database allows (local.db_max_connections above).
  db_max_connections            = floor(local.db_max_connections * 0.9)
  alarm_emails                  = var.alarm_emails
  alarm_https_endpoints         = var.alarm_https_endpoints
  failed_invocations_queue_name = module.messaging.failed_invocations_queue_name
  metrics_namespace             = local.metrics_namespace
  scheduled_function_names      = [for f in ["rebill_schedule", "invoice_finalizer", "outbox_sweep"] : "${local.prefix}-${f}" if contains(local.packaged_functions, f)]
  log_group_names               = [for f in local.packaged_functions : aws_cloudwatch_log_group.function[f].name]
}

output "api_url" {
  value = aws_api_gateway_stage.api.invoke_url
}

output "cognito_ids" {
  value = { user_pool_id = module.cognito.user_pool_id, client_id = module.cognito.client_id, user_pool_arn = module.cognito.user_pool_arn }
}
