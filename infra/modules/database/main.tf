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

output "cluster_id" { value = aws_rds_cluster.this.id }
output "endpoint" { value = aws_rds_cluster.this.endpoint }
output "secret_arn" { value = aws_rds_cluster.this.master_user_secret[0].secret_arn }
output "kms_key_arn" { value = module.key.arn }
