variable "stage" {
  description = "dev or prod: must match the chalice stage the package was built for"
  type        = string
}
variable "prefix" {
  description = "Resource name prefix (default billing-STAGE); must equal RESOURCE_PREFIX at packaging time (queue names)"
  type        = string
  default     = null
  validation {
    # The longest names built from it: PREFIX-invoice_finalizer-event (64) and the functions' roles (64).
    condition     = var.prefix == null || length(coalesce(var.prefix, "x")) <= 40
    error_message = "prefix is at most 40 characters (the names built from it are limited to 64)."
  }
}
variable "vpc_cidr" {
  type    = string
  default = "10.40.0.0/16"
}
variable "interface_endpoints" {
  description = "VPC interface endpoints; [] turns them off (traffic then leaves through the NAT)"
  type        = list(string)
  default     = ["sqs", "sns", "secretsmanager", "kms", "logs", "ssm"]
}
variable "single_nat_gateway" {
  type    = bool
  default = true
}
variable "db_min_acu" {
  type    = number
  default = 0.5
}
variable "db_max_acu" {
  type    = number
  default = 4
}
variable "db_deletion_protection" {
  description = "Refuse to delete the database and the user pool (production)"
  type        = bool
  default     = true
}
variable "db_engine_version" {
  type    = string
  default = "16.4"
}
variable "db_operator_connections" {
  description = "Database connections kept for people and migrations, outside the functions' budget"
  type        = number
  default     = 20
}
variable "function_timeout_s" {
  description = "The Lambda timeout in .chalice/config.json for this stage"
  type        = number
  default     = 30
}
variable "max_receive_count" {
  type    = number
  default = 5
}
variable "reserved_concurrency" {
  description = <<-EOT
    Reserved concurrency per function, over the stage's defaults (local.default_reservations in
    main.tf). Every function has one: its connections count against the database's
    budget, and a plan over it fails (README, "Connections"). An SQS consumer's reservation is also
    its mapping's maximum concurrency (2-1000). The account keeps 100 unreserved: the sum must fit
    the account's concurrency limit less 100.
  EOT
  type        = map(number)
  default     = {}
}
variable "waf_block" {
  description = "false: WAF rules only count (dev); true: they block (prod)"
  type        = bool
  default     = false
}
variable "api_throttle" {
  description = "API Gateway throttling per method path (\"*/*\" is the stage default); WAF's per-IP limits follow it per route"
  type        = map(object({ rate = number, burst = number }))
  default = {
    "*/*"            = { rate = 100, burst = 200 }
    "v1/events/POST" = { rate = 500, burst = 1000 }
  }
}
variable "error_rate_alarm_percent" {
  type    = number
  default = 2
}
variable "ses_sender" {
  description = "A verified SES identity"
  type        = string
}
variable "callback_urls" {
  type    = list(string)
  default = ["https://localhost/callback"]
}

variable "public_api_url" {
  description = "Where customers reach the API (a custom domain, or the stage's invoke URL after a first apply); emails link hosted invoices under it. Empty: emails carry no link."
  type        = string
  default     = ""
}

variable "cognito_resource_server" {
  description = "The resource server's identifier, the prefix of the API's OAuth scopes (IDENTIFIER/read, ...)"
  type        = string
  default     = "billing"
  validation {
    # The app's routes demand billing/* scopes (chalicelib/auth.py RESOURCE_SERVER, fixed when packaged).
    condition     = var.cognito_resource_server == "billing"
    error_message = "The app's scopes are billing/*: change chalicelib/auth.py RESOURCE_SERVER with this."
  }
}

variable "pre_token_generation_trigger" {
  description = <<-EOT
    Whether the user pool calls the app's pre-token-generation function
    (billing-platform-STAGE-pre_token_generation) before it issues tokens:
    "packaged": the Terraform path (devtools.package sets it): the function is in this root
      module and Cognito's invoke permission is created beside it, after it;
    "deployed": the chalice deploy path, once `chalice deploy` has created the function:
      this configuration grants Cognito the invoke and attaches the trigger;
    "none": infra/ alone before the first chalice deploy (no function to call yet).
  EOT
  type        = string
  default     = "none"
  validation {
    condition     = contains(["none", "deployed", "packaged"], var.pre_token_generation_trigger)
    error_message = "pre_token_generation_trigger is none, deployed or packaged."
  }
}

variable "log_retention_days" {
  description = "How long the functions', API access and WAF logs are kept (CloudWatch's allowed values)"
  type        = number
  default     = 365
}

variable "alarm_emails" {
  description = "Who the alarms reach by email (each confirms the subscription once)"
  type        = list(string)
  default     = []
}

variable "alarm_https_endpoints" {
  description = "HTTPS endpoints the alarms are posted to (a chat webhook, an incident tool)"
  type        = list(string)
  default     = []
}

variable "rds_proxy" {
  description = "Put an RDS Proxy between the functions and Aurora (README, \"Connections\")"
  type        = bool
  default     = false
}
