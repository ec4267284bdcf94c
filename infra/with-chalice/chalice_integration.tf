# Wiring between chalice's generated resources (chalice.tf.json, in the same
# build directory) and the modules: runtime permissions, the API stage with X-Ray
# and access logs, per-route throttling, WAF, alarms and the dashboard.
# Only valid next to chalice.tf.json: `python -m devtools.package` puts it there.

# (data.aws_caller_identity/aws_partition/aws_region.current are declared in main.tf.)

# Roles. Every function runs as chalice's default-role but those devtools/package.py points at a
# role of their own (OWN_ROLES there), because they need more, or less, than the runtime policy:
# - api_handler: the runtime policy, and the user pool's tenant admins and machine clients;
# - send_notification: the runtime policy, and the tenant admins (a redelivered tenant.created
#   invites the first admin when the request that made the tenant could not);
# - bootstrap_operator: the database secret and the tenant admins (it makes the operator's tenant and
#   invites its first admin: no queues, topics, email or tenants' payment keys);
# - pre_token_generation: reads one tenant row from the database, nothing else.
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
  for_each           = toset(["api_handler", "send_notification", "bootstrap_operator", "pre_token_generation"])
  name               = "${local.name}-${replace(each.key, "_", "-")}"
  assume_role_policy = data.aws_iam_policy_document.lambda_assume.json
}

# Logs and the network interfaces of functions in the VPC, and X-Ray, for every role.
resource "aws_iam_role_policy_attachment" "vpc_access" {
  for_each   = merge({ default = aws_iam_role.default-role.name }, { for key, role in aws_iam_role.function : key => role.name })
  role       = each.value
  policy_arn = "arn:${data.aws_partition.current.partition}:iam::aws:policy/service-role/AWSLambdaVPCAccessExecutionRole"
}

resource "aws_iam_role_policy_attachment" "xray" {
  for_each   = merge({ default = aws_iam_role.default-role.name }, { for key, role in aws_iam_role.function : key => role.name })
  role       = each.value
  policy_arn = "arn:${data.aws_partition.current.partition}:iam::aws:policy/AWSXRayDaemonWriteAccess"
}

moved {
  from = aws_iam_role_policy_attachment.vpc_access
  to   = aws_iam_role_policy_attachment.vpc_access["default"]
}

moved {
  from = aws_iam_role_policy_attachment.xray
  to   = aws_iam_role_policy_attachment.xray["default"]
}

data "aws_iam_policy_document" "runtime" {
  statement {
    sid       = "DatabaseSecret"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [module.database.secret_arn]
  }
  statement {
    # Each tenant's payment-gateway keys (chalicelib/billing/gateway_credentials.py): PUT /v1/gateway
    # creates or replaces them, charging and Stripe's webhooks read them. Nothing outside the prefix.
    sid       = "GatewaySecrets"
    actions   = ["secretsmanager:GetSecretValue", "secretsmanager:CreateSecret", "secretsmanager:PutSecretValue", "secretsmanager:TagResource"]
    resources = ["arn:${data.aws_partition.current.partition}:secretsmanager:${data.aws_region.current.name}:${data.aws_caller_identity.current.account_id}:secret:${var.prefix}/tenants/*"]
  }
  statement {
    sid       = "Decrypt"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [module.database.kms_key_arn, module.messaging.kms_key_arn]
  }
  statement {
    sid       = "PublishEvents"
    actions   = ["sns:Publish"]
    resources = [module.messaging.events_topic_arn]
  }
  statement {
    sid       = "Queues"
    actions   = ["sqs:SendMessage", "sqs:GetQueueUrl", "sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes", "sqs:ChangeMessageVisibility"]
    resources = values(module.messaging.queue_arns)
  }
  statement {
    sid       = "Email"
    actions   = ["ses:SendEmail"]
    resources = ["arn:${data.aws_partition.current.partition}:ses:${data.aws_region.current.name}:${data.aws_caller_identity.current.account_id}:identity/*"]
  }
}

resource "aws_iam_role_policy" "runtime" {
  for_each = {
    default           = aws_iam_role.default-role.id
    api_handler       = aws_iam_role.function["api_handler"].id
    send_notification = aws_iam_role.function["send_notification"].id
  }
  name   = "${local.name}-runtime"
  role   = each.value
  policy = data.aws_iam_policy_document.runtime.json
}

moved {
  from = aws_iam_role_policy.runtime
  to   = aws_iam_role_policy.runtime["default"]
}

data "aws_iam_policy_document" "tenant_admins" {
  statement {
    # Onboarding (chalicelib/onboarding.py): POST /v1/tenants invites a tenant's first ADMIN, the
    # send-notification consumer does it again for a redelivered tenant.created, and the operator's
    # bootstrap invites the operator's. This pool only.
    sid       = "TenantAdmins"
    actions   = ["cognito-idp:AdminCreateUser", "cognito-idp:AdminGetUser", "cognito-idp:AdminAddUserToGroup"]
    resources = [module.cognito.user_pool_arn]
  }
}

resource "aws_iam_role_policy" "tenant_admins" {
  for_each = {
    api_handler        = aws_iam_role.function["api_handler"].id
    send_notification  = aws_iam_role.function["send_notification"].id
    bootstrap_operator = aws_iam_role.function["bootstrap_operator"].id
  }
  name   = "${local.name}-tenant-admins"
  role   = each.value
  policy = data.aws_iam_policy_document.tenant_admins.json
}

data "aws_iam_policy_document" "machine_clients" {
  statement {
    # /v1/api_clients (chalicelib/api_clients.py): tenants' app clients of the client-credentials
    # grant, made, shown and deleted by the API only. This pool only.
    sid       = "MachineClients"
    actions   = ["cognito-idp:CreateUserPoolClient", "cognito-idp:DeleteUserPoolClient"]
    resources = [module.cognito.user_pool_arn]
  }
}

resource "aws_iam_role_policy" "machine_clients" {
  name   = "${local.name}-machine-clients"
  role   = aws_iam_role.function["api_handler"].id
  policy = data.aws_iam_policy_document.machine_clients.json
}

data "aws_iam_policy_document" "database_secret" {
  # The trigger and the operator's bootstrap read and write the database only: its secret (encrypted
  # with the database's key); logs, network interfaces and X-Ray come with the attachments above.
  statement {
    sid       = "DatabaseSecret"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [module.database.secret_arn]
  }
  statement {
    sid       = "DecryptDatabaseSecret"
    actions   = ["kms:Decrypt"]
    resources = [module.database.kms_key_arn]
  }
}

resource "aws_iam_role_policy" "pre_token_generation" {
  name   = "${local.name}-pre-token-generation"
  role   = aws_iam_role.function["pre_token_generation"].id
  policy = data.aws_iam_policy_document.database_secret.json
}

resource "aws_iam_role_policy" "bootstrap_operator" {
  name   = "${local.name}-bootstrap-operator"
  role   = aws_iam_role.function["bootstrap_operator"].id
  policy = data.aws_iam_policy_document.database_secret.json
}

# API Gateway writes access and execution logs through one role per account and
# region; without it, creating a stage with logging fails.
data "aws_iam_policy_document" "apigateway_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["apigateway.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "apigateway_logs" {
  name               = "${local.name}-apigateway-logs"
  assume_role_policy = data.aws_iam_policy_document.apigateway_assume.json
}

resource "aws_iam_role_policy_attachment" "apigateway_logs" {
  role       = aws_iam_role.apigateway_logs.name
  policy_arn = "arn:${data.aws_partition.current.partition}:iam::aws:policy/service-role/AmazonAPIGatewayPushToCloudWatchLogs"
}

resource "aws_api_gateway_account" "this" {
  # Account-wide setting: a second stage in the same account and region sets the same.
  cloudwatch_role_arn = aws_iam_role.apigateway_logs.arn
  depends_on          = [aws_iam_role_policy_attachment.apigateway_logs]
}

resource "aws_cloudwatch_log_group" "api_access" {
  #checkov:skip=CKV_AWS_158:CloudWatch Logs encrypts at rest with AWS-managed keys; a CMK for logs is future work
  name              = "/aws/apigateway/${local.name}-access"
  retention_in_days = 365
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
  depends_on           = [aws_api_gateway_account.this]
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
  source              = "./modules/waf"
  name                = local.name
  stage_arn           = aws_api_gateway_stage.api.arn
  block               = var.waf_block
  rate_limit_per_5min = var.waf_rate_limit_per_5min
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
  db_max_connections = var.db_max_connections_alarm
}

output "api_url" {
  value = aws_api_gateway_stage.api.invoke_url
}

output "cognito_ids" {
  value = { user_pool_id = module.cognito.user_pool_id, client_id = module.cognito.client_id, user_pool_arn = module.cognito.user_pool_arn }
}
