# The billing platform's infrastructure. `python -m devtools.package --stage STAGE`
# copies this directory next to chalice's generated chalice.tf.json in
# build/STAGE, which makes them one root module: these modules create what the
# functions need, and the patched chalice resources refer to them (VPC config,
# environment, IAM, API stage).
#
# Remote state: configure a backend per account before the first apply, e.g.
#   terraform init -backend-config="bucket=<state-bucket>" -backend-config="key=billing/<stage>.tfstate" \
#                  -backend-config="region=<region>" -backend-config="dynamodb_table=<lock-table>"
# with a `backend "s3" {}` block in a backend.tf of your own (kept out of the repo).

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}
data "aws_region" "current" {}

locals {
  name = "${var.prefix}-${var.stage}"
  # chalice names a function {app_name}-{stage}-{name}: the pre-token-generation trigger of
  # app.py (app_name "billing-platform" in .chalice/config.json; a test compares both paths).
  pre_token_generation_function = "billing-platform-${var.stage}-pre_token_generation"
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
  topic_queues = { for queue, types in local.routing.topic_queues : "${var.prefix}-${queue}" => types }
  other_queues = [for queue in local.routing.other_queues : "${var.prefix}-${queue}"]
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
  prefix             = var.prefix
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
  pre_token_generation_lambda_arn   = var.pre_token_generation_trigger == "none" ? null : local.pre_token_generation_arn
  grant_pre_token_generation_invoke = var.pre_token_generation_trigger == "deployed"
}
