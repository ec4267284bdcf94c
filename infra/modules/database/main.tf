# Aurora Serverless v2 PostgreSQL: KMS-encrypted, TLS forced, master password
# managed by RDS in Secrets Manager, Performance Insights on, deletion protection
# per stage.

variable "name" { type = string }
variable "subnet_ids" { type = list(string) }
variable "security_group_id" { type = string }
variable "min_acu" { type = number }
variable "max_acu" { type = number }
variable "deletion_protection" { type = bool }
variable "engine_version" { type = string }
variable "proxy" {
  description = "An RDS Proxy in front of the cluster for the functions"
  type        = bool
  default     = false
}

module "key" {
  source      = "../kms_key"
  description = "${var.name} Aurora storage, Performance Insights and the master secret"
}

data "aws_iam_policy_document" "monitoring_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["monitoring.rds.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "monitoring" {
  name               = "${var.name}-rds-monitoring"
  assume_role_policy = data.aws_iam_policy_document.monitoring_assume.json
}

resource "aws_iam_role_policy_attachment" "monitoring" {
  role       = aws_iam_role.monitoring.name
  policy_arn = "arn:aws:iam::aws:policy/service-role/AmazonRDSEnhancedMonitoringRole"
}

resource "aws_db_subnet_group" "this" {
  name       = var.name
  subnet_ids = var.subnet_ids
}

resource "aws_rds_cluster_parameter_group" "this" {
  name   = "${var.name}-pg"
  family = "aurora-postgresql${split(".", var.engine_version)[0]}"
  parameter {
    name  = "rds.force_ssl"
    value = "1"
  }
  parameter {
    name  = "log_min_duration_statement"
    value = "1000"
  }
  parameter {
    # Schema changes only: statement text of a billing database carries customer data.
    name  = "log_statement"
    value = "ddl"
  }
}

resource "aws_rds_cluster" "this" {
  #checkov:skip=CKV2_AWS_8:continuous backups with 14-day point-in-time recovery; an AWS Backup plan is an account-level choice
  #checkov:skip=CKV2_AWS_27:query logging is deliberately DDL-only plus slow statements: full statement logs would hold customer data
  cluster_identifier                  = var.name
  engine                              = "aurora-postgresql"
  engine_mode                         = "provisioned"
  engine_version                      = var.engine_version
  database_name                       = "billing"
  master_username                     = "billing_owner"
  manage_master_user_password         = true
  master_user_secret_kms_key_id       = module.key.arn
  storage_encrypted                   = true
  kms_key_id                          = module.key.arn
  db_subnet_group_name                = aws_db_subnet_group.this.name
  vpc_security_group_ids              = [var.security_group_id]
  db_cluster_parameter_group_name     = aws_rds_cluster_parameter_group.this.name
  deletion_protection                 = var.deletion_protection
  backup_retention_period             = 14
  copy_tags_to_snapshot               = true
  iam_database_authentication_enabled = true
  enabled_cloudwatch_logs_exports     = ["postgresql"]
  skip_final_snapshot                 = !var.deletion_protection
  final_snapshot_identifier           = var.deletion_protection ? "${var.name}-final" : null
  serverlessv2_scaling_configuration {
    min_capacity = var.min_acu
    max_capacity = var.max_acu
  }
  lifecycle {
    # auto_minor_version_upgrade moves the version; Terraform must not "downgrade" it back.
    ignore_changes = [engine_version]
  }
}

resource "aws_rds_cluster_instance" "this" {
  count                                 = 2
  identifier                            = "${var.name}-${count.index}"
  cluster_identifier                    = aws_rds_cluster.this.id
  instance_class                        = "db.serverless"
  engine                                = aws_rds_cluster.this.engine
  engine_version                        = aws_rds_cluster.this.engine_version
  performance_insights_enabled          = true
  performance_insights_kms_key_id       = module.key.arn
  performance_insights_retention_period = 7
  auto_minor_version_upgrade            = true
  monitoring_interval                   = 60
  monitoring_role_arn                   = aws_iam_role.monitoring.arn
  lifecycle {
    ignore_changes = [engine_version]
  }
}

# --- the optional RDS Proxy ---------------------------------------------------------------------
# Functions authenticate to the proxy with IAM as billing_proxy (a login role like billing_runtime:
# migrations/0012_runtime_login.sql); the proxy logs in to Aurora as that role with the password in
# this secret, which the migration runner sets (python -m chalicelib.db.migrate --proxy-secret ARN).
# A role granted rds_iam cannot log in with a password, hence a role of its own for the proxy.

data "aws_secretsmanager_random_password" "proxy" {
  count               = var.proxy ? 1 : 0
  password_length     = 40
  exclude_punctuation = true
}

resource "aws_secretsmanager_secret" "proxy" {
  #checkov:skip=CKV2_AWS_57:the proxy's login role has no rotation Lambda; rotate by putting a new value and running the migration runner's --proxy-secret
  count                   = var.proxy ? 1 : 0
  name                    = "${var.name}/db-proxy"
  kms_key_id              = module.key.arn
  recovery_window_in_days = var.deletion_protection ? 7 : 0 # a dev stage is destroyed and made again
}

resource "aws_secretsmanager_secret_version" "proxy" {
  count         = var.proxy ? 1 : 0
  secret_id     = aws_secretsmanager_secret.proxy[0].id
  secret_string = jsonencode({ username = "billing_proxy", password = data.aws_secretsmanager_random_password.proxy[0].random_password })
  lifecycle {
    ignore_changes = [secret_string] # a new random value on every plan otherwise
  }
}

data "aws_iam_policy_document" "proxy_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["rds.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "proxy" {
  count              = var.proxy ? 1 : 0
  name               = "${var.name}-db-proxy"
  assume_role_policy = data.aws_iam_policy_document.proxy_assume.json
}

data "aws_iam_policy_document" "proxy" {
  count = var.proxy ? 1 : 0
  statement {
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [aws_secretsmanager_secret.proxy[0].arn]
  }
  statement {
    actions   = ["kms:Decrypt"]
    resources = [module.key.arn]
  }
}

resource "aws_iam_role_policy" "proxy" {
  count  = var.proxy ? 1 : 0
  name   = "${var.name}-db-proxy"
  role   = aws_iam_role.proxy[0].id
  policy = data.aws_iam_policy_document.proxy[0].json
}

resource "aws_db_proxy" "this" {
  count                  = var.proxy ? 1 : 0
  name                   = var.name
  engine_family          = "POSTGRESQL"
  role_arn               = aws_iam_role.proxy[0].arn
  vpc_subnet_ids         = var.subnet_ids
  vpc_security_group_ids = [var.security_group_id]
  require_tls            = true
  idle_client_timeout    = 1800
  auth {
    auth_scheme               = "SECRETS"
    iam_auth                  = "REQUIRED"
    secret_arn                = aws_secretsmanager_secret.proxy[0].arn
    client_password_auth_type = "POSTGRES_SCRAM_SHA_256"
  }
  depends_on = [aws_iam_role_policy.proxy]
}

resource "aws_db_proxy_default_target_group" "this" {
  count         = var.proxy ? 1 : 0
  db_proxy_name = aws_db_proxy.this[0].name
  connection_pool_config {
    # The functions' reservations are sized to 80% of max_connections (README, "Connections").
    max_connections_percent = 80
  }
}

resource "aws_db_proxy_target" "this" {
  count                 = var.proxy ? 1 : 0
  db_proxy_name         = aws_db_proxy.this[0].name
  target_group_name     = aws_db_proxy_default_target_group.this[0].name
  db_cluster_identifier = aws_rds_cluster.this.id
  depends_on            = [aws_rds_cluster_instance.this] # a target registers against a running writer
}

output "cluster_id" { value = aws_rds_cluster.this.id }
output "cluster_endpoint" { value = aws_rds_cluster.this.endpoint }
output "cluster_resource_id" { value = aws_rds_cluster.this.cluster_resource_id }
output "proxy_endpoint" { value = var.proxy ? aws_db_proxy.this[0].endpoint : null }
# The id in the proxy's rds-db:connect ARNs (prx-...), the last part of its ARN.
output "proxy_resource_id" { value = var.proxy ? element(split(":", aws_db_proxy.this[0].arn), 6) : null }
output "proxy_secret_arn" { value = var.proxy ? aws_secretsmanager_secret.proxy[0].arn : null }
output "endpoint" { value = aws_rds_cluster.this.endpoint }
output "secret_arn" { value = aws_rds_cluster.this.master_user_secret[0].secret_arn }
output "kms_key_arn" { value = module.key.arn }
