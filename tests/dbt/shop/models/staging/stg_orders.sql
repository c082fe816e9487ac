select
    id as order_id,
    user_id as customer_id,
    order_date,
    status,
    -- cents to dollars: integer division must not truncate
    amount_cents / 100 as amount
from {{ ref('raw_orders') }}
