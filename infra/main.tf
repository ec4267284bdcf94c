# The billing platform's infrastructure. `python -m devtools.package --stage STAGE`
# copies this directory next to chalice's generated chalice.tf.json in
# build/STAGE, which makes them one root module: these modules create what the
# functions need, and the patched chalice resources refer to them (VPC config,
# environment, IAM, API stage).
#
# Remote state: configure a backend per account before the first apply, e.g.
#   terraform init -backend-config="bucket=<state-bucket>" -backend-config="key=billing/<stage>.tfstate" \
#                  -backend-config="region=<region>" -backend-config="use_lockfile=true"
# with a `backend "s3" {}` block in a backend.tf of your own (kept out of the repo). The bucket, and the
# account-wide API Gateway logging role every stage's stage needs, come from infra/account (once per
# account and region, before the first stage).

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}
data "aws_region" "current" {}

locals {
  # Every name in the stack starts with the prefix (billing-STAGE unless set): two stages, or two
  # stacks of one stage, apply side by side in one account.
  prefix = coalesce(var.prefix, "billing-${var.stage}")
  name   = local.prefix
  # The Terraform path names functions PREFIX-NAME (devtools/package.py); `chalice deploy` names
  # them {app_name}-{stage}-{name} (app_name "billing-platform" in .chalice/config.json).
  pre_token_generation_function = (var.pre_token_generation_trigger == "packaged"
    ? "${local.prefix}-pre_token_generation"
  : "billing-platform-${var.stage}-pre_token_generation")
  # Built from the name, not read from the function resource. Every function's environment
  # holds the pool's id (COGNITO_USER_POOL_ID), so the pool cannot also wait for the function's
  # ARN: that is a dependency cycle. The name is fixed before either exists; Cognito takes the
  # ARN as configuration and calls it only when it issues tokens, and the invoke permission is
  # granted once the function is there (chalice.tf.json, or the module on the chalice deploy path).
  pre_token_generation_arn = join(":", [
    "arn:${data.aws_partition.current.partition}:lambda:${data.aws_region.current.name}",
    "${data.aws_caller_identity.current.account_id}:function:${local.pre_token_generation_function}",
  ])
  # The queues app.py consumes (RESOURCE_PREFIX + fixed suffixes) and the event types each
  # topic queue receives (null: every type), generated from chalicelib/handlers.py by
  # `python -m devtools.event_routing` (a test fails when the file is stale).
  routing      = jsondecode(file("${path.module}/event_routing.json"))
  topic_queues = { for queue, types in local.routing.topic_queues : "${local.prefix}-${queue}" => types }
  other_queues = [for queue in local.routing.other_queues : "${local.prefix}-${queue}"]
  queue_names  = concat(keys(local.topic_queues), local.other_queues)
}

module "network" {
  source              = "./modules/network"
  name                = local.name
  cidr                = var.vpc_cidr
  interface_endpoints = var.interface_endpoints
  single_nat_gateway  = var.single_nat_gateway
}

module "database" {
  source              = "./modules/database"
  proxy               = var.rds_proxy
  name                = local.name
  subnet_ids          = module.network.private_subnet_ids
  security_group_id   = module.network.database_security_group_id
  min_acu             = var.db_min_acu
  max_acu             = var.db_max_acu
  deletion_protection = var.db_deletion_protection
  engine_version      = var.db_engine_version
}

module "messaging" {
  source             = "./modules/messaging"
  prefix             = local.prefix
  topic_queues       = local.topic_queues
  other_queues       = local.other_queues
  function_timeout_s = var.function_timeout_s
  max_receive_count  = var.max_receive_count
}

module "cognito" {
  source                            = "./modules/cognito"
  name                              = local.name
  callback_urls                     = var.callback_urls
  resource_server_identifier        = var.cognito_resource_server
  deletion_protection               = var.db_deletion_protection
  pre_token_generation_lambda_arn   = var.pre_token_generation_trigger == "none" ? null : local.pre_token_generation_arn
  grant_pre_token_generation_invoke = var.pre_token_generation_trigger == "deployed"
}

# How the functions reach Aurora: the cluster, or the RDS Proxy in front of it (var.rds_proxy), as the
# runtime login role with IAM authentication (migrations/0012_runtime_login.sql; never the owner).
locals {
  db_host         = var.rds_proxy ? module.database.proxy_endpoint : module.database.endpoint
  db_runtime_user = var.rds_proxy ? "billing_proxy" : "billing_runtime"
  # The app's EMF namespace (METRICS_NAMESPACE): one per stack, so stages never share alarms.
  metrics_namespace = "BillingPlatform/${local.prefix}"
  # What rds-db:connect names: the cluster's resource id, or the proxy's.
  db_connect_resource = var.rds_proxy ? module.database.proxy_resource_id : module.database.cluster_resource_id
}

# Who may call what (infra/function_access.json), and the resources its grants name.
locals {
  function_access = jsondecode(file("${path.module}/function_access.json"))
  account         = data.aws_caller_identity.current.account_id
  region          = data.aws_region.current.name
  partition       = data.aws_partition.current.partition
  function_resource_arns = {
    database_login           = "arn:${local.partition}:rds-db:${local.region}:${local.account}:dbuser:${local.db_connect_resource}/${local.db_runtime_user}"
    events_topic             = module.messaging.events_topic_arn
    messaging_key            = module.messaging.kms_key_arn
    gateway_secrets          = "arn:${local.partition}:secretsmanager:${local.region}:${local.account}:secret:${local.prefix}/tenants/*"
    secrets_key              = module.database.kms_key_arn
    email_identities         = "arn:${local.partition}:ses:${local.region}:${local.account}:identity/*"
    user_pool                = module.cognito.user_pool_arn
    webhook_deliveries_queue = module.messaging.queue_arns["${local.prefix}-webhook-deliveries"]
    rebill_queue             = module.messaging.queue_arns["${local.prefix}-rebill"]
  }
}

# Reserved concurrency, derived from the database's connection budget (README, "Connections");
# devtools/stage_config.py applies them on the chalice deploy path too.
# A container holds one connection per thread that touches the database: one, but webhook_delivery
# runs ten lanes beside its handler, the API opens a second for a refused usage batch's record
# (db.separate_transaction), and ops_notice never connects. An SQS consumer keeps at least 5:
# Lambda polls with five, and the chalice deploy path cannot cap its mapping's concurrency.
locals {
  connections_per_container = { api_handler = 2, webhook_delivery = 11, ops_notice = 0 }
  default_reservations = {
    dev = {
      api_handler          = 20
      pre_token_generation = 5
      bootstrap_operator   = 1
      generate_invoice     = 5
      send_notification    = 5
      audit_log            = 5
      webhook_fan_out      = 5
      webhook_delivery     = 5
      ops_notice           = 2
      outbox_sweep         = 1
      rebill_schedule      = 1
      invoice_finalizer    = 1
      rebill_processor     = 5
    }
    prod = {
      api_handler          = 300
      pre_token_generation = 50
      bootstrap_operator   = 1
      generate_invoice     = 20
      send_notification    = 10
      audit_log            = 10
      webhook_fan_out      = 10
      webhook_delivery     = 20
      ops_notice           = 2
      outbox_sweep         = 1
      rebill_schedule      = 1
      invoice_finalizer    = 1
      rebill_processor     = 40
    }
  }
  reserved_concurrency = merge(lookup(local.default_reservations, var.stage, local.default_reservations.dev), var.reserved_concurrency)
  db_connections_reserved = sum([
    for function in keys(local.function_access.functions) : lookup(local.reserved_concurrency, function, 0) * lookup(local.connections_per_container, function, 1)
  ])
  # Aurora PostgreSQL: max_connections = LEAST(DBInstanceClassMemory / 9531392, 5000), and Serverless v2
  # sizes it for the maximum ACU; AWS's table gives 189 for 1 ACU and 3,360 for 16, so 189 per ACU is
  # the safe side. A minimum below 1 ACU caps it at 2,000. 80% for the functions, less the operators'.
  db_max_connections   = min(var.db_min_acu < 1 ? 2000 : 5000, floor(var.db_max_acu * 189))
  db_connection_budget = floor(local.db_max_connections * 0.8) - var.db_operator_connections
}

resource "terraform_data" "connection_budget" {
  input = { reserved = local.db_connections_reserved, budget = local.db_connection_budget }
  lifecycle {
    precondition {
      condition     = alltrue([for function in keys(local.function_access.functions) : contains(keys(local.reserved_concurrency), function)])
      error_message = "Every function needs a reserved concurrency: its connections count against the database's budget."
    }
    precondition {
      condition     = local.db_connections_reserved <= local.db_connection_budget
      error_message = "Reserved concurrency x connections per container is ${local.db_connections_reserved}, over the database's budget of ${local.db_connection_budget} (db_max_acu ${var.db_max_acu}): lower reserved_concurrency or raise db_max_acu."
    }
  }
}

