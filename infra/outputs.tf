# What the functions need, for `chalice deploy` (devtools/stage_config.py writes
# these into .chalice/config.json) and for reading after an apply.

output "lambda_subnet_ids" { value = module.network.private_subnet_ids }
output "lambda_security_group_id" { value = module.network.lambda_security_group_id }
output "db_secret_arn" { value = module.database.secret_arn }
output "db_host" { value = local.db_host }
output "db_cluster_endpoint" {
  description = "Aurora itself: where migrations connect as the owner (db_host is the proxy's, with rds_proxy)"
  value       = module.database.cluster_endpoint
}
output "db_runtime_user" { value = local.db_runtime_user }
output "events_topic_arn" { value = module.messaging.events_topic_arn }
output "ops_topic_arn" { value = module.messaging.ops_topic_arn }
output "cognito_user_pool_id" { value = module.cognito.user_pool_id }
output "cognito_user_pool_arn" { value = module.cognito.user_pool_arn }
output "cognito_client_id" { value = module.cognito.client_id }
output "ses_sender" { value = var.ses_sender }
output "resource_prefix" { value = local.prefix }
output "migrations_security_group_id" { value = module.network.migrations_security_group_id }
output "cognito_domain" { value = module.cognito.domain }
output "cognito_resource_server" { value = module.cognito.resource_server_identifier }
output "cognito_scopes" { value = module.cognito.scopes }
output "cognito_token_url" { value = module.cognito.token_url }
output "pre_token_generation_function" {
  description = "The function the pool's pre-token-generation trigger calls (when pre_token_generation_trigger is not none)"
  value       = local.pre_token_generation_function
}
output "kms_key_arns" { value = [module.database.kms_key_arn, module.messaging.kms_key_arn] }
output "queue_arns" { value = values(module.messaging.queue_arns) }
output "gateway_secrets_kms_key_arn" { value = module.database.kms_key_arn }
output "public_api_url" { value = var.public_api_url }
output "metrics_namespace" { value = local.metrics_namespace }
output "db_ssl_trust_system" { value = var.rds_proxy }
output "db_proxy_secret_arn" {
  description = "With rds_proxy: the proxy's login (billing_proxy); the migration runner sets its password from it"
  value       = module.database.proxy_secret_arn
}
output "function_resource_arns" {
  description = "What infra/function_access.json's grants name (devtools/stage_config.py writes the chalice deploy path's policies from them)"
  value       = local.function_resource_arns
}
output "failed_invocations_queue_arn" { value = module.messaging.failed_invocations_queue_arn }
output "reserved_concurrency" {
  description = "Each function's reserved concurrency (devtools/stage_config.py sets them on the chalice deploy path)"
  value       = local.reserved_concurrency
}
output "db_connection_budget" { value = { reserved = local.db_connections_reserved, budget = local.db_connection_budget, max_connections = local.db_max_connections } }
