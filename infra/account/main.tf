# Once per AWS account and region, before the first stage: what every stage shares and none may own.
#
#   terraform -chdir=infra/account init && terraform -chdir=infra/account apply -var name=<org>-billing
#
# - The remote-state bucket the stages' backends use (S3 with its native lock file: Terraform 1.10+
#   needs no DynamoDB table), versioned, encrypted, private, TLS only. Its own state stays local (or
#   is migrated into the bucket it made: `terraform init -migrate-state` with a backend.tf).
# - API Gateway's account-wide CloudWatch logging role: a setting per account and region, so a stage
#   that owned it would take every other stage's access logs with it when destroyed.

terraform {
  required_version = ">= 1.10.0"
  required_providers {
    aws = { source = "hashicorp/aws", version = ">= 5.0, < 6.0" }
  }
}

variable "name" {
  description = "The state bucket's name prefix (bucket names are global: the account id is appended)"
  type        = string
  default     = "billing-terraform-state"
}

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}
data "aws_region" "current" {}

resource "aws_s3_bucket" "state" {
  #checkov:skip=CKV_AWS_18:access logging for a state bucket needs a second bucket; CloudTrail data events are the account's choice
  #checkov:skip=CKV_AWS_144:cross-region replication of Terraform state is an account-level DR choice
  #checkov:skip=CKV2_AWS_62:nothing consumes events from the state bucket
  #checkov:skip=CKV_AWS_145:SSE-S3 (AES-256) encrypts state at rest; a CMK would add a key to manage before any stage exists
  bucket = "${var.name}-${data.aws_caller_identity.current.account_id}"
}

resource "aws_s3_bucket_versioning" "state" {
  bucket = aws_s3_bucket.state.id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "state" {
  bucket = aws_s3_bucket.state.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "AES256"
    }
  }
}

resource "aws_s3_bucket_public_access_block" "state" {
  bucket                  = aws_s3_bucket.state.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_lifecycle_configuration" "state" {
  bucket = aws_s3_bucket.state.id
  rule {
    id     = "old-state-versions"
    status = "Enabled"
    filter {}
    noncurrent_version_expiration {
      noncurrent_days = 90
    }
    abort_incomplete_multipart_upload {
      days_after_initiation = 7
    }
  }
}

data "aws_iam_policy_document" "state_tls_only" {
  statement {
    sid       = "TlsOnly"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [aws_s3_bucket.state.arn, "${aws_s3_bucket.state.arn}/*"]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_s3_bucket_policy" "state" {
  bucket = aws_s3_bucket.state.id
  policy = data.aws_iam_policy_document.state_tls_only.json
}

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
  name               = "apigateway-cloudwatch-logs-${data.aws_region.current.name}" # IAM is global: one per region
  assume_role_policy = data.aws_iam_policy_document.apigateway_assume.json
}

resource "aws_iam_role_policy_attachment" "apigateway_logs" {
  role       = aws_iam_role.apigateway_logs.name
  policy_arn = "arn:${data.aws_partition.current.partition}:iam::aws:policy/service-role/AmazonAPIGatewayPushToCloudWatchLogs"
}

resource "aws_api_gateway_account" "this" {
  cloudwatch_role_arn = aws_iam_role.apigateway_logs.arn
  depends_on          = [aws_iam_role_policy_attachment.apigateway_logs]
}

output "state_bucket" {
  description = "For each stage's backend: -backend-config=bucket=THIS -backend-config=key=billing/STAGE.tfstate -backend-config=use_lockfile=true"
  value       = aws_s3_bucket.state.bucket
}
output "region" { value = data.aws_region.current.name }
