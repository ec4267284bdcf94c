# VPC for the Lambda functions and the database: 2 public subnets (NAT), 2 private
# subnets (Lambda, Aurora), security groups (Lambda: egress only; DB: 5432 from
# Lambda only), and VPC endpoints so AWS API traffic stays inside the VPC.

variable "name" { type = string }
variable "cidr" { type = string }
variable "interface_endpoints" {
  description = "Interface endpoints to create (empty list turns them off)"
  type        = list(string)
}
variable "single_nat_gateway" { type = bool }

data "aws_availability_zones" "available" {
  #checkov:skip=CKV_AWS_394:the module is region-agnostic; the first two available zones are pinned in state once created
  state = "available"
}
data "aws_region" "current" {}

locals {
  azs = slice(data.aws_availability_zones.available.names, 0, 2)
}

resource "aws_vpc" "this" {
  cidr_block           = var.cidr
  enable_dns_support   = true
  enable_dns_hostnames = true
  tags                 = { Name = var.name }
}

resource "aws_subnet" "public" {
  count             = 2
  vpc_id            = aws_vpc.this.id
  cidr_block        = cidrsubnet(var.cidr, 4, count.index)
  availability_zone = local.azs[count.index]
  tags              = { Name = "${var.name}-public-${count.index}" }
}

resource "aws_subnet" "private" {
  count             = 2
  vpc_id            = aws_vpc.this.id
  cidr_block        = cidrsubnet(var.cidr, 4, count.index + 8)
  availability_zone = local.azs[count.index]
  tags              = { Name = "${var.name}-private-${count.index}" }
}

resource "aws_cloudwatch_log_group" "flow" {
  #checkov:skip=CKV_AWS_158:CloudWatch Logs encrypts at rest with AWS-managed keys; a CMK for logs is future work
  name              = "/aws/vpc/${var.name}-flow"
  retention_in_days = 365
}

data "aws_iam_policy_document" "flow_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["vpc-flow-logs.amazonaws.com"]
    }
  }
}

data "aws_iam_policy_document" "flow_write" {
  statement {
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"]
    resources = ["${aws_cloudwatch_log_group.flow.arn}:*"]
  }
}

resource "aws_iam_role" "flow" {
  name               = "${var.name}-vpc-flow"
  assume_role_policy = data.aws_iam_policy_document.flow_assume.json
}

resource "aws_iam_role_policy" "flow" {
  role   = aws_iam_role.flow.id
  policy = data.aws_iam_policy_document.flow_write.json
}

resource "aws_flow_log" "this" {
  vpc_id          = aws_vpc.this.id
  traffic_type    = "ALL"
  iam_role_arn    = aws_iam_role.flow.arn
  log_destination = aws_cloudwatch_log_group.flow.arn
}

resource "aws_internet_gateway" "this" {
  vpc_id = aws_vpc.this.id
}

resource "aws_eip" "nat" {
  count  = var.single_nat_gateway ? 1 : 2
  domain = "vpc"
}

resource "aws_nat_gateway" "this" {
  count         = var.single_nat_gateway ? 1 : 2
  allocation_id = aws_eip.nat[count.index].id
  subnet_id     = aws_subnet.public[count.index].id
  depends_on    = [aws_internet_gateway.this]
}

resource "aws_route_table" "public" {
  vpc_id = aws_vpc.this.id
  route {
    cidr_block = "0.0.0.0/0"
    gateway_id = aws_internet_gateway.this.id
  }
}

resource "aws_route_table_association" "public" {
  count          = 2
  subnet_id      = aws_subnet.public[count.index].id
  route_table_id = aws_route_table.public.id
}

resource "aws_route_table" "private" {
  count  = 2
  vpc_id = aws_vpc.this.id
  route {
    cidr_block     = "0.0.0.0/0"
    nat_gateway_id = aws_nat_gateway.this[var.single_nat_gateway ? 0 : count.index].id
  }
}

resource "aws_route_table_association" "private" {
  count          = 2
  subnet_id      = aws_subnet.private[count.index].id
  route_table_id = aws_route_table.private[count.index].id
}

resource "aws_default_security_group" "default" {
  # The default group allows nothing: every resource uses an explicit one.
  vpc_id = aws_vpc.this.id
}

resource "aws_security_group" "lambda" {
  #checkov:skip=CKV2_AWS_5:attached to every function by the chalice patch (vpc_config), outside this module
  name        = "${var.name}-lambda"
  description = "Lambda functions: no inbound; HTTPS out (AWS APIs, payment gateway), PostgreSQL in the VPC"
  vpc_id      = aws_vpc.this.id
  egress {
    description = "HTTPS: AWS APIs (through endpoints or NAT) and the payment gateway"
    from_port   = 443
    to_port     = 443
    protocol    = "tcp"
    cidr_blocks = ["0.0.0.0/0"]
  }
  egress {
    description = "PostgreSQL inside the VPC"
    from_port   = 5432
    to_port     = 5432
    protocol    = "tcp"
    cidr_blocks = [var.cidr]
  }
}

resource "aws_security_group" "migrations" {
  #checkov:skip=CKV2_AWS_5:attached by an operator to the CloudShell VPC environment (or host) that runs migrations
  name        = "${var.name}-migrations"
  description = "Whoever runs database migrations (a CloudShell VPC environment): PostgreSQL out"
  vpc_id      = aws_vpc.this.id
  egress {
    description = "PostgreSQL inside the VPC"
    from_port   = 5432
    to_port     = 5432
    protocol    = "tcp"
    cidr_blocks = [var.cidr]
  }
  egress {
    description = "HTTPS: Secrets Manager for the master secret"
    from_port   = 443
    to_port     = 443
    protocol    = "tcp"
    cidr_blocks = ["0.0.0.0/0"]
  }
}

resource "aws_security_group" "database" {
  #checkov:skip=CKV2_AWS_5:attached to the Aurora cluster by the database module
  name        = "${var.name}-database"
  description = "Aurora: PostgreSQL from the Lambda security group only"
  vpc_id      = aws_vpc.this.id
  ingress {
    description     = "PostgreSQL from Lambda"
    from_port       = 5432
    to_port         = 5432
    protocol        = "tcp"
    security_groups = [aws_security_group.lambda.id]
  }
  ingress {
    description     = "PostgreSQL from the migration runner"
    from_port       = 5432
    to_port         = 5432
    protocol        = "tcp"
    security_groups = [aws_security_group.migrations.id]
  }
  ingress {
    description = "PostgreSQL from the RDS Proxy, which sits in this group (var.rds_proxy)"
    from_port   = 5432
    to_port     = 5432
    protocol    = "tcp"
    self        = true
  }
  egress {
    description = "The RDS Proxy to Aurora, inside this group"
    from_port   = 5432
    to_port     = 5432
    protocol    = "tcp"
    self        = true
  }
}

resource "aws_security_group" "endpoints" {
  #checkov:skip=CKV2_AWS_5:attached to the interface endpoints, which a stage may turn off
  name        = "${var.name}-endpoints"
  description = "Interface endpoints: HTTPS from Lambda and the migration runner only"
  vpc_id      = aws_vpc.this.id
  ingress {
    description     = "HTTPS from Lambda"
    from_port       = 443
    to_port         = 443
    protocol        = "tcp"
    security_groups = [aws_security_group.lambda.id]
  }
  ingress {
    # With private DNS on, Secrets Manager's name resolves to the endpoint inside the VPC: the
    # migration runner reads the master secret (and the proxy's) through it, never the NAT.
    description     = "HTTPS from the migration runner"
    from_port       = 443
    to_port         = 443
    protocol        = "tcp"
    security_groups = [aws_security_group.migrations.id]
  }
}

resource "aws_vpc_endpoint" "gateway" {
  for_each          = toset(["s3", "dynamodb"])
  vpc_id            = aws_vpc.this.id
  service_name      = "com.amazonaws.${data.aws_region.current.name}.${each.key}"
  vpc_endpoint_type = "Gateway"
  route_table_ids   = aws_route_table.private[*].id
}

resource "aws_vpc_endpoint" "interface" {
  for_each            = toset(var.interface_endpoints)
  vpc_id              = aws_vpc.this.id
  service_name        = "com.amazonaws.${data.aws_region.current.name}.${each.key}"
  vpc_endpoint_type   = "Interface"
  private_dns_enabled = true
  subnet_ids          = aws_subnet.private[*].id
  security_group_ids  = [aws_security_group.endpoints.id]
}

output "vpc_id" { value = aws_vpc.this.id }
output "private_subnet_ids" { value = aws_subnet.private[*].id }
output "lambda_security_group_id" { value = aws_security_group.lambda.id }
output "database_security_group_id" { value = aws_security_group.database.id }
output "migrations_security_group_id" { value = aws_security_group.migrations.id }
