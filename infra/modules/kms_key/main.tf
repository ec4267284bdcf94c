# A customer-managed KMS key with rotation and an explicit key policy: the
# account administers it, and the listed AWS services may use it to encrypt
# what they deliver (SNS into encrypted queues, CloudWatch into encrypted topics).

variable "description" { type = string }
variable "service_principals" {
  description = "Services allowed kms:GenerateDataKey* and kms:Decrypt"
  type        = list(string)
  default     = []
}

data "aws_caller_identity" "current" {}

data "aws_iam_policy_document" "key" {
  # A key policy: "*" is this key, and the account root administering it is AWS's default.
  #checkov:skip=CKV_AWS_109:key policy, not an IAM policy; the account root administers its own key
  #checkov:skip=CKV_AWS_111:key policy, not an IAM policy; resource "*" means this key
  #checkov:skip=CKV_AWS_356:key policy, not an IAM policy; resource "*" means this key
  statement {
    sid       = "AccountAdministers"
    actions   = ["kms:*"]
    resources = ["*"]
    principals {
      type        = "AWS"
      identifiers = ["arn:aws:iam::${data.aws_caller_identity.current.account_id}:root"]
    }
  }
  dynamic "statement" {
    for_each = length(var.service_principals) > 0 ? [1] : []
    content {
      sid       = "ServicesDeliver"
      actions   = ["kms:GenerateDataKey*", "kms:Decrypt"]
      resources = ["*"]
      principals {
        type        = "Service"
        identifiers = var.service_principals
      }
    }
  }
}

resource "aws_kms_key" "this" {
  description         = var.description
  enable_key_rotation = true
  policy              = data.aws_iam_policy_document.key.json
}

output "arn" { value = aws_kms_key.this.arn }
output "id" { value = aws_kms_key.this.id }
