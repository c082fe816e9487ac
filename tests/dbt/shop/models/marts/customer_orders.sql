{% set statuses = ['placed', 'shipped', 'completed', 'returned'] %}
select
    customer_id,
    {% for status in statuses %}
    sum(case when status = '{{ status }}' then coalesce(amount, 0) else 0 end) as {{ status }}_amount,
    {% endfor %}
    count(*) as order_count,
    sum(case when amount >= {{ var('big_order_dollars') }} then 1 else 0 end) as big_orders,
    min(order_date) as first_order_date
from {{ ref('stg_orders') }}
group by customer_id
