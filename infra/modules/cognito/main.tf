# The user pool: custom:tenant_id set at sign-up by an admin and immutable,
# ADMIN and USER groups, an app client using the authorization-code flow with
# PKCE (no client secret for public clients), the `billing` resource server whose
# scopes API Gateway's authorizer demands on every authenticated route, and the
# app's pre-token-generation trigger (event V3_0: it also reaches the access
# tokens of the client-credentials grant that tenants' machine clients use; the
# API creates those clients at run time, not Terraform).

variable "name" { type = string }
variable "callback_urls" { type = list(string) }

variable "resource_server_identifier" {
  description = "The resource server's identifier: the scopes are IDENTIFIER/read, /write, /usage.write and /admin (must equal chalicelib/auth.py's RESOURCE_SERVER; the functions get it as COGNITO_RESOURCE_SERVER)"
  type        = string
  default     = "billing"
}

variable "pre_token_generation_lambda_arn" {
  description = <<-EOT
    The pre-token-generation function's ARN, or null for no trigger. Pass an ARN built
    from the function's known name, never a reference to the function resource: the
    functions' environment holds this pool's id, so a reference would make the pool
    wait for the function and the function for the pool (a cycle).
  EOT
  type        = string
  default     = null
}

variable "grant_pre_token_generation_invoke" {
  description = "Grant Cognito the invoke here: the function exists already (chalice deploy). The Terraform path grants it beside the function in chalice.tf.json (devtools/package.py), so that it is created after the function."
  type        = bool
  default     = false
}

variable "deletion_protection" {
  description = "Refuse to delete the pool (and with it every person's sign-in): on in production"
  type        = bool
  default     = true
}

data "aws_region" "current" {}
data "aws_caller_identity" "current" {}

resource "aws_cognito_user_pool" "this" {
  name                = var.name
  deletion_protection = var.deletion_protection ? "ACTIVE" : "INACTIVE"
  # Access-token customization (the V2_0/V3_0 trigger events; for the client-credentials
  # grant V3_0) needs the Essentials or Plus feature plan: Lite pools call the trigger for
  # ID tokens only. Essentials is billed per monthly active user, machine-to-machine
  # tokens per app client and request.
  user_pool_tier    = "ESSENTIALS"
  mfa_configuration = "OPTIONAL"
  software_token_mfa_configuration {
    enabled = true
  }
  admin_create_user_config {
    allow_admin_create_user_only = true
  }
  password_policy {
    minimum_length    = 12
    require_lowercase = true
    require_uppercase = true
    require_numbers   = true
    require_symbols   = true
  }
  schema {
    name                     = "tenant_id"
    attribute_data_type      = "String"
    mutable                  = false
    developer_only_attribute = false
    required                 = false
    string_attribute_constraints {
      min_length = 36
      max_length = 36
    }
  }
  dynamic "lambda_config" {
    for_each = var.pre_token_generation_lambda_arn == null ? [] : [var.pre_token_generation_lambda_arn]
    content {
      pre_token_generation_config {
        lambda_arn     = lambda_config.value
        lambda_version = "V3_0"
      }
    }
  }
}

resource "aws_lambda_permission" "pre_token_generation" {
  count         = var.pre_token_generation_lambda_arn != null && var.grant_pre_token_generation_invoke ? 1 : 0
  statement_id  = "cognito-pre-token-generation"
  action        = "lambda:InvokeFunction"
  function_name = var.pre_token_generation_lambda_arn
  principal     = "cognito-idp.amazonaws.com"
  source_arn    = aws_cognito_user_pool.this.arn
}

resource "aws_cognito_resource_server" "billing" {
  # The API's scopes. Tenants' machine clients (client-credentials grant, made by the API)
  # are given some of them; people's access tokens carry them through the app client below,
  # and the trigger narrows them by group.
  identifier   = var.resource_server_identifier
  name         = "${var.name}-billing"
  user_pool_id = aws_cognito_user_pool.this.id
  scope {
    scope_name        = "usage.write"
    scope_description = "Send usage events"
  }
  scope {
    scope_name        = "read"
    scope_description = "Read the tenant's billing data"
  }
  scope {
    scope_name        = "write"
    scope_description = "Change the tenant's billing data: accounts, subscriptions, invoices"
  }
  scope {
    scope_name        = "admin"
    scope_description = "Administer the tenant: plans, settings, corrections, API clients"
  }
}

resource "aws_cognito_user_pool_domain" "this" {
  # The hosted /oauth2/authorize and /oauth2/token endpoints of the code flow. A domain prefix is
  # global per region across all accounts: the account id makes this stage's its own.
  domain       = "${var.name}-${data.aws_caller_identity.current.account_id}"
  user_pool_id = aws_cognito_user_pool.this.id
}

resource "aws_cognito_user_group" "admin" {
  name         = "ADMIN"
  user_pool_id = aws_cognito_user_pool.this.id
}

resource "aws_cognito_user_group" "user" {
  name         = "USER"
  user_pool_id = aws_cognito_user_pool.this.id
}

resource "aws_cognito_user_pool_client" "api" {
  name                                 = "${var.name}-api"
  user_pool_id                         = aws_cognito_user_pool.this.id
  generate_secret                      = false
  allowed_oauth_flows_user_pool_client = true
  allowed_oauth_flows                  = ["code"]
  allowed_oauth_scopes                 = concat(["openid", "email", "profile"], aws_cognito_resource_server.billing.scope_identifiers)
  callback_urls                        = var.callback_urls
  supported_identity_providers         = ["COGNITO"]
  explicit_auth_flows                  = ["ALLOW_REFRESH_TOKEN_AUTH", "ALLOW_USER_SRP_AUTH"]
  prevent_user_existence_errors        = "ENABLED"
  # custom:tenant_id is read-only to clients: only admins set it.
  read_attributes  = ["email", "custom:tenant_id"]
  write_attributes = ["email"]
}

output "user_pool_id" { value = aws_cognito_user_pool.this.id }
output "user_pool_arn" { value = aws_cognito_user_pool.this.arn }
output "client_id" { value = aws_cognito_user_pool_client.api.id }
output "domain" { value = aws_cognito_user_pool_domain.this.domain }
output "resource_server_identifier" { value = aws_cognito_resource_server.billing.identifier }
output "scopes" { value = aws_cognito_resource_server.billing.scope_identifiers }
output "token_url" {
  description = "The client-credentials grant: POST grant_type=client_credentials&scope=... with the client's id and secret (HTTP Basic)"
  value       = "https://${aws_cognito_user_pool_domain.this.domain}.auth.${data.aws_region.current.name}.amazoncognito.com/oauth2/token"
}
